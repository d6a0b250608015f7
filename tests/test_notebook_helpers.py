import pytest

from ane_vit.notebook import environment_report, load_published_figures, results_dir


def test_results_dir_found_from_a_subfolder(monkeypatch, tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "published_figures.json").write_text('{"provenance": {"kind": "published"}}')
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert results_dir() == (tmp_path / "results").resolve()
    assert load_published_figures() == {"provenance": {"kind": "published"}}


def test_results_dir_missing_says_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="inside the ane-vit repository"):
        results_dir(tmp_path)


def test_published_figures_carry_citations():
    figures = load_published_figures()
    assert figures["provenance"]["kind"] == "published"
    for name, entry in figures.items():
        if name != "provenance":
            assert entry["citation"], f"{name} has no citation"


def test_environment_report_names_the_versions():
    line = environment_report()
    for part in ("Python", "torch", "coremltools", "ane_vit"):
        assert part in line


def test_dist_version_of_provenance_records():
    from importlib import metadata

    from ane_vit._versions import dist_version

    assert dist_version("torch") == metadata.version("torch")
    assert dist_version("no-such-distribution-ane-vit") == "not installed"


def test_the_environment_line_is_printed_within_the_book_column():
    from ane_vit.notebook import _fit

    line = environment_report() + " | a-long-version-string-" + "x" * 40
    printed = _fit(line).splitlines()
    assert len(printed) > 1 and all(len(row) <= 75 for row in printed), printed
    assert " | ".join(printed) == line  # broken only at its separators, nothing lost

"""Keep the book's notebooks stripped, tagged and shaped as STYLE.md says."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAC_TAGS = {"requires-macos", "requires-ane"}
SKIP_TAGS = {"skip-execution", "nbval-skip"}


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [ch["file"] for ch in part.get("chapters", [])]
    return files


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    return "".join(cell["source"])


def test_every_toc_entry_exists_and_every_notebook_is_in_the_toc():
    toc = _toc_files()
    for entry in toc:
        candidates = [ROOT / f"{entry}{ext}" for ext in (".md", ".ipynb")]
        assert any(c.exists() for c in candidates), f"_toc.yml names {entry}, which does not exist"
    in_toc = {e for e in toc if e.startswith("notebooks/")}
    on_disk = {f"notebooks/{p.stem}" for p in NOTEBOOKS}
    assert on_disk == in_toc, f"notebooks not in _toc.yml: {on_disk - in_toc}; in _toc.yml but missing: {in_toc - on_disk}"


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
class TestNotebook:
    def test_name(self, path):
        assert re.fullmatch(r"(\d\d|A\d)_[a-z0-9_]+", path.stem), f"{path.name}: expected NN_topic.ipynb (a chapter) or AN_topic.ipynb (an appendix)"

    def test_stripped(self, path):
        for i, cell in enumerate(_cells(path)):
            if cell["cell_type"] != "code" or "keep_output" in cell.get("metadata", {}).get("tags", []):
                continue
            assert not cell.get("outputs"), f"{path.name} cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"

    def test_anatomy(self, path):
        cells = _cells(path)
        assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith("# "), "first cell must be the title"
        markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
        titles = re.findall(r"^# ", markdown, flags=re.M)
        assert len(titles) == 1, f"{path.name}: one '#' title expected, found {len(titles)}"
        for heading in ("## Learning goals", "## Takeaways", "## Exercises"):
            assert re.search(rf"^{heading}", markdown, flags=re.M), f"{path.name}: missing '{heading}'"
        assert "{cite}" in markdown, f"{path.name}: cite at least one source from book/references.bib"

    def test_setup_cell(self, path):
        code = [_source(c) for c in _cells(path) if c["cell_type"] == "code"]
        assert code and "setup(" in code[0], f"{path.name}: the first code cell must call ane_vit.notebook.setup"

    def test_code_cells(self, path):
        for i, cell in enumerate(_cells(path)):
            if cell["cell_type"] != "code":
                continue
            src = _source(cell)
            assert "pip install" not in src and "sys.path" not in src, f"{path.name} cell {i}: no installs or path edits"
            assert len(src.splitlines()) <= 30, f"{path.name} cell {i}: {len(src.splitlines())} lines (30 at most)"

    def test_mac_cells_are_skipped(self, path):
        for i, cell in enumerate(_cells(path)):
            tags = set(cell.get("metadata", {}).get("tags", []))
            if tags & MAC_TAGS:
                assert SKIP_TAGS <= tags, f"{path.name} cell {i}: a Mac-only cell needs the tags {sorted(SKIP_TAGS)}"

    def test_kernel(self, path):
        meta = json.loads(path.read_text())["metadata"]
        assert meta.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


def test_bibliography_parses_and_every_cited_key_exists():
    # A merge once dropped an entry's closing brace: the book build then failed
    # in Sphinx, long after the notebooks ran. pybtex comes with the book's tools.
    pybtex = pytest.importorskip("pybtex.database")
    bib = ROOT / "book" / "references.bib"
    keys = set(pybtex.parse_file(str(bib)).entries)  # raises on a syntax error
    declared = re.findall(r"^@\w+\{([^,\s]+),", bib.read_text(), flags=re.M)
    twice = sorted(k for k, n in Counter(declared).items() if n > 1)
    assert not twice, f"book/references.bib declares these keys more than once (merges append blocks): {twice}"
    sources = [p.read_text() for p in NOTEBOOKS] + [p.read_text() for p in (ROOT / "book").glob("*.md")]
    cited = set()
    for text in sources:
        for group in re.findall(r"\{cite(?::[a-z]+)?\}`([^`]+)`", text):
            cited |= {k.strip() for k in group.split(",")}
    assert cited, "no {cite} roles found: the pattern no longer matches the book"
    assert not cited - keys, f"cited but not in book/references.bib: {sorted(cited - keys)}"

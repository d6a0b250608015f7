"""The export command line checks everything before converting (issue 16, command-line side).

``--dry-run`` checks what the real run checks (enumerated shapes, file names, the output
folder, existing files); file names of enumerated programs fit the file system; a program
for batch 1 and 2 is not named "batch 1"; ``--deployment-target`` makes iOS18 programs; a
size the model cannot take is named as such. Nothing here converts: ``to_mlprogram`` is
replaced by a fake program where a save must really happen.
"""

import os
import re

import pytest
import torch

from ane_vit import PEType
from ane_vit import export as ex
from ane_vit.export import (
    DEPLOYMENT_TARGETS,
    deployment_target,
    enumerated_filename,
    export_moat,
    export_model,
    main,
    moat_filename,
)
from ane_vit.export.paths import MAX_LISTED_NAME, _check_target

CFG = {"base_arch": "micro-moat", "attention_mode": "global", "pe_type": PEType.LePE_FUSED, "split_head": True}
MICRO = ["--arch", "micro-moat", "--attention-mode", "global", "--num-classes", "10", "--pe-type", "LePE_FUSED"]


@pytest.fixture(autouse=True)
def _no_coremltools_import(monkeypatch):
    """The real runs here convert nothing: skip the seconds-long import the command line does first."""
    monkeypatch.setattr(ex.cli, "import_coremltools", lambda: None)


def _sizes(n):
    """``n`` different --size arguments, multiples of 32."""
    pairs = [(32 * h, 32 * w) for h in range(1, 12) for w in range(1, 13)][:n]
    return [a for h, w in pairs for a in ("--size", str(h), str(w))], [(1, 3, h, w) for h, w in pairs]


def _never(*args, **kwargs):
    raise AssertionError("converted although the arguments should have been refused first")


class _FakeMLModel:
    """What ``export_model`` needs of a converted program, without a conversion."""

    def __init__(self):
        self.author = self.version = self.short_description = ""
        self.user_defined_metadata, self.input_description, self.output_description = {}, {}, {}

    def save(self, path):
        os.makedirs(path)
        open(os.path.join(path, "Manifest.json"), "w").close()


# --------------------------------------------------------------------------- file names


def test_enumerated_names_list_few_sizes_and_summarise_many():
    two = [(1, 3, 64, 64), (1, 3, 96, 96)]
    assert enumerated_filename(CFG, two) == "micro-moat_globalAttn_batch1_64x64_PEType.LePE_FUSED_split-head_True_sizes-64x64-96x96.mlpackage"
    for n in (30, 128):
        shapes = _sizes(n)[1]
        name = enumerated_filename(CFG, shapes)
        hs, ws = {s[2] for s in shapes}, {s[3] for s in shapes}
        assert re.fullmatch(
            rf"micro-moat_globalAttn_batch1_32x32_PEType\.LePE_FUSED_split-head_True_{n}sizes-h{min(hs)}-{max(hs)}-w{min(ws)}-{max(ws)}-[0-9a-f]{{8}}\.mlpackage",
            name), name
        assert len(name) <= MAX_LISTED_NAME
        assert enumerated_filename(CFG, shapes) == name  # deterministic
        assert enumerated_filename(CFG, [shapes[0], *shapes[1:][::-1]]) != name  # another list, another name


def test_a_program_for_batch_1_and_2_is_not_named_batch_1_only():
    name = enumerated_filename(CFG, [(1, 3, 64, 64), (2, 3, 64, 64)])
    assert name.endswith("_batch1_64x64_PEType.LePE_FUSED_split-head_True_shapes-1x3x64x64-2x3x64x64.mlpackage")
    many = [(b, 3, 32 * k, 32 * k) for b in (1, 2) for k in range(1, 16)]
    assert re.search(r"_30shapes-b1-2-h32-480-w32-480-[0-9a-f]{8}\.mlpackage$", enumerated_filename(CFG, many))


def test_a_file_name_the_file_system_cannot_take_is_refused_before_converting(tmp_path, monkeypatch):
    monkeypatch.setattr(ex.save, "to_mlprogram", _never)
    long = tmp_path / ("a" * 240 + ".mlpackage")  # 250 bytes, plus 14 for the staging folder: over 255
    with pytest.raises(ValueError, match=r"is 250 bytes; the file system of .* allows 255, and the atomic save needs 14 more"):
        _check_target(long, overwrite=False)
    with pytest.raises(ValueError, match="choose a name of at most 241 bytes"):
        export_model(torch.nn.Conv2d(3, 4, 1), torch.rand(1, 3, 4, 4), long)


# --------------------------------------------------------------------------- dry run = real run's checks


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_more_than_128_enumerated_sizes_are_refused_before_converting(dry_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ex.save, "export_moat", _never)
    with pytest.raises(SystemExit) as err:
        main([*MICRO, "--enumerated-sizes", *_sizes(129)[0], "--output-dir", str(tmp_path), *dry_run])
    assert err.value.code == 2
    assert "--enumerated-sizes: Core ML allows at most 128 enumerated shapes per input, got 129" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*MICRO, "--enumerated-sizes", "--size", "64", "64", "--size", "96", "96", "--size", "64", "64",
              "--output-dir", str(tmp_path), *dry_run])
    assert "enumerated_shapes lists [(1, 3, 64, 64)] more than once" in capsys.readouterr().err


@pytest.mark.parametrize("n", [30, 128])
def test_30_and_128_enumerated_sizes_save_under_a_name_that_fits(n, tmp_path, capsys, monkeypatch):
    # 30 sizes converted for 6 minutes, then failed with "File name too long" (the name listed every size).
    argv = [*MICRO, "--enumerated-sizes", *_sizes(n)[0], "--output-dir", str(tmp_path)]
    assert main([*argv, "--dry-run"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == [str(tmp_path / moat_filename(CFG, _sizes(n)[1][0], _sizes(n)[1]))]
    monkeypatch.setattr(ex.save, "to_mlprogram", lambda *a, **kw: _FakeMLModel())
    assert main(argv) == 0  # the real save (os.rename into a name the file system takes)
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(listed[0])]


def test_the_dry_run_refuses_existing_files_and_an_output_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit):
        main([*MICRO, "--size", "64", "64", "--output-dir", str(tmp_path / "afile"), "--dry-run"])
    assert f"--output-dir: cannot write to the output folder ({tmp_path / 'afile'} is a file, not a folder)" in capsys.readouterr().err
    existing = tmp_path / moat_filename(CFG, (1, 3, 64, 64))
    existing.mkdir()
    with pytest.raises(SystemExit):
        main([*MICRO, "--size", "64", "64", "--output-dir", str(tmp_path), "--dry-run"])
    assert f"{existing} already exist(s); pass --overwrite to replace" in capsys.readouterr().err
    assert main([*MICRO, "--size", "64", "64", "--output-dir", str(tmp_path), "--dry-run", "--overwrite"]) == 0


# --------------------------------------------------------------------------- deployment target


def test_deployment_target_option_names_the_file_and_reaches_the_conversion(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(ex.save, "export_moat", lambda **kw: calls.append(kw) or tmp_path / "x.mlpackage")
    monkeypatch.setattr(ex.cli, "package_nbytes", lambda p: 1)
    assert main([*MICRO, "--size", "64", "64", "--deployment-target", "ios18", "--output-dir", str(tmp_path)]) == 0
    assert calls[0]["minimum_deployment_target"] == "iOS18"
    assert main([*MICRO, "--size", "64", "64", "--deployment-target", "iOS18", "--output-dir", str(tmp_path), "--dry-run"]) == 0
    assert capsys.readouterr().out.split()[-1].endswith("_split-head_True_iOS18.mlpackage")
    assert main([*MICRO, "--size", "64", "64", "--output-dir", str(tmp_path), "--dry-run"]) == 0  # default: the seed's name
    assert capsys.readouterr().out.split()[-1].endswith("_split-head_True.mlpackage")
    assert main([*MICRO, "--size", "64", "64", "--output-dir", str(tmp_path)]) == 0
    assert [c["minimum_deployment_target"] for c in calls] == ["iOS18", "iOS16"]
    with pytest.raises(SystemExit) as err:
        main([*MICRO, "--size", "64", "64", "--deployment-target", "iOS14", "--dry-run"])
    assert err.value.code == 2
    assert ("argument --deployment-target: unknown deployment target 'iOS14'; an ML Program needs one of iOS15, iOS16"
            in capsys.readouterr().err)
    assert deployment_target(" MACOS15 ") == "macOS15" and "iOS16" in DEPLOYMENT_TARGETS


# --------------------------------------------------------------------------- sizes the model cannot take


def test_an_enumerated_size_the_model_cannot_take_is_named_before_converting(tmp_path, monkeypatch):
    # A 70-pixel size converted, then failed materializing and blamed "a layer bakes a constant".
    monkeypatch.setattr(ex.save, "export_model", _never)
    with pytest.raises(ValueError, match=re.escape(
            "enumerated shape (1, 3, 70, 70) does not suit micro-moat: image height and width must be "
            "positive multiples of 32, got (70, 70)")):
        export_moat("micro-moat", (1, 3, 64, 64), pe_type="LePE_FUSED", num_classes=10, output_dir=tmp_path,
                    enumerated_shapes=[(1, 3, 64, 64), (1, 3, 70, 70)])

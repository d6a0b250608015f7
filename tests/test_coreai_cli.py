"""``python -m ane_vit.coreai``: export, run, summary and the studies' argument checks; the errors
a user meets (exit status 2, one line saying what was expected and what was given); no
library noise on a real run (checked in a fresh process, where native output would show)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ane_vit.coreai as cai
from ane_vit.coreai import cli, stack
from ane_vit.coreai.cli import main

OK, WHY = cai.coreai_status()
needs_coreai = pytest.mark.skipif(not OK, reason=WHY)
PROG = "python -m ane_vit.coreai"


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def micro_moat(tmp_path_factory):
    """micro-moat 64x64 exported by the command line, random weights (seed 0)."""
    if not OK:
        pytest.skip(WHY)
    folder = tmp_path_factory.mktemp("cli")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export", "--arch", "micro-moat", "--size", "64", "64", "--seed", "0", "-o", str(folder / "m.aimodel")]) == 0
    return folder / "m.aimodel", out.getvalue()


@needs_coreai
def test_export_run_summary(micro_moat, capsys, tmp_path):
    micro_moat, out = micro_moat  # the path, and what the export printed
    assert re.fullmatch(rf"{re.escape(str(micro_moat))}  float32  \d+\.\d\d MB\n", out)
    meta = cai.read_aimodel_metadata(micro_moat)["creatorDefinedMetadata"]
    assert meta["ane_vit.base_arch"] == "micro-moat" and meta["ane_vit.weights"] == "randomize_(seed=0)"
    assert main(["run", str(micro_moat)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "input  x: (1, 3, 64, 64) float32",
        "output stage_0: (1, 32, 16, 16) float32",
        "output stage_1: (1, 64, 8, 8) float32",
        "output stage_2: (1, 64, 4, 4) float32",
        "output stage_3: (1, 128, 2, 2) float32",
    ]
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(micro_moat), "--input", str(tmp_path / "x.npy")]) == 0
    assert "input  x: (1, 3, 64, 64) float32" in capsys.readouterr().out
    assert main(["summary", str(micro_moat)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Core AI program: {micro_moat}\n") and "inputs:  x (1, 3, 64, 64) float32" in text
    assert re.search(r"^ops in main: \d+ \(\d+ types\)", text, flags=re.M)


@needs_coreai
def test_run_and_summary_errors(micro_moat, capsys, tmp_path):
    micro_moat, _ = micro_moat
    missing = tmp_path / "none.aimodel"
    assert _error(capsys, ["run", str(missing)]) == (
        f"{PROG}: error: no Core AI program at {str(missing)!r} (expected an .aimodel folder, "
        "e.g. written by python -m ane_vit.coreai export)")
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    line = _error(capsys, ["summary", str(package)])
    assert line.startswith(f"{PROG}: error: {str(package)!r} is a Core ML ML Program (.mlpackage); Apple's Core AI "
                           "runtime cannot open one.")
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 32, 32), np.float32))
    assert _error(capsys, ["run", str(micro_moat), "--input", str(tmp_path / "wrong.npy")]) == (
        f"{PROG}: error: input 'x' of m.aimodel (main) expects shape (1, 3, 64, 64) float32, got (1, 3, 32, 32) float32")
    assert _error(capsys, ["run", str(micro_moat), "--input", str(tmp_path / "nothing.npy")]).startswith(
        f"{PROG}: error: --input {str(tmp_path / 'nothing.npy')!r}: cannot read")
    assert _error(capsys, ["run", str(micro_moat), "--function", "other"]) == (
        f"{PROG}: error: {str(micro_moat)!r} has no function 'other'; it has ['main']")


def test_export_errors_before_any_conversion(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cai.save, "to_aiprogram", lambda *a, **k: pytest.fail("converted despite a usage error"))
    assert "invalid choice: 'tiny-moat-9'" in _error(capsys, ["export", "--arch", "tiny-moat-9"])
    assert _error(capsys, ["export", "-o", str(tmp_path / "m.mlpackage")]).startswith(
        f"{PROG}: error: {str(tmp_path / 'm.mlpackage')!r} is a Core ML ML Program (.mlpackage)")
    assert "250" in _error(capsys, ["export", "--size", "250", "256", "-o", str(tmp_path / "m.aimodel")])
    assert _error(capsys, ["export", "--batch", "0", "-o", str(tmp_path / "m.aimodel")]) == (
        f"{PROG}: error: --batch and --size must be positive, got batch 0, size 256 256")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert "cannot write to the output folder" in _error(capsys, ["export", "-o", str(blocker / "out" / "m.aimodel")])
    existing = tmp_path / "e.aimodel"
    existing.mkdir()
    assert _error(capsys, ["export", "-o", str(existing)]) == (
        f"{PROG}: error: {existing} already exists; pass overwrite=True / --overwrite to replace it")
    assert not list((tmp_path).glob(".*"))  # nothing half-written


def test_study_commands_check_their_arguments(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cai.compare, "run_study", lambda *a, **k: pytest.fail("ran despite a usage error"))
    monkeypatch.setattr(cai.compare, "run_survey", lambda *a, **k: pytest.fail("ran despite a usage error"))
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    assert _error(capsys, ["runtimes", "-o", str(existing)]) == f"{PROG}: error: {existing} already exists; pass --overwrite to replace it"
    assert _error(capsys, ["probes", "-o", str(existing)]) == f"{PROG}: error: {existing} already exists; pass --overwrite to replace it"
    assert _error(capsys, ["accuracy", "-o", str(tmp_path / "r.txt")]) == f"{PROG}: error: --output must be a .json file, got {str(tmp_path / 'r.txt')!r}"
    assert _error(capsys, ["probes", "-o", str(tmp_path / "p.json"), "--threads", "0"]) == (
        f"{PROG}: error: --threads must be >= 1, got 0")
    assert _error(capsys, ["accuracy", "-o", str(tmp_path / "a.json"), "--limit", "5"]) == (
        f"{PROG}: error: --limit must be >= 10 (images, 10 classes), got 5")
    assert _error(capsys, ["runtimes", "-o", str(tmp_path / "b.json"), "--model", "resnet"]).startswith(
        f"{PROG}: error: unknown --model ['resnet']; choose from ['tiny-moat-0 global (ANE layout)'")


def test_commands_say_where_core_ai_installs_when_it_is_missing(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "coreai", None)
    monkeypatch.setitem(sys.modules, "coreai.runtime", None)
    stack._import_error.cache_clear()
    try:
        line = _error(capsys, ["export", "--arch", "micro-moat", "--size", "64", "64", "-o", str(tmp_path / "m.aimodel")])
        assert line.startswith("error: export needs Core AI. Apple's Core AI stack (coreai-core==1.0.0b3")
        assert not (tmp_path / "m.aimodel").exists()
    finally:
        stack._import_error.cache_clear()


@needs_coreai
def test_no_library_noise_in_a_fresh_process(micro_moat):
    """A real run in a new interpreter: stdout is our lines only, stderr is empty (no converter
    banner, no 'ODIE [default]: Loading function', no torchao or coreai-torch warnings)."""
    micro_moat, _ = micro_moat
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    # the command leaves with os._exit once the native stack is loaded (ane_vit/coreai/__main__.py)
    done = subprocess.run([sys.executable, "-m", "ane_vit.coreai", "run", str(micro_moat)], capture_output=True,
                          text=True, env=env, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[0] == "input  x: (1, 3, 64, 64) float32" and len(done.stdout.splitlines()) == 5


def test_quiet_keeps_unexpected_lines(capfd):
    """The filters drop the known chatter only; any other line is written back."""
    from ane_vit.coreai.quiet import drop_native_stderr_lines, drop_stdout_lines

    with drop_stdout_lines():
        print("coreai-torch 0.4.3: converting 1 program(s) to Core AI")
        print("something else")
    with drop_native_stderr_lines():
        os.write(2, b"ODIE [default]: Loading function 'main'\nnative warning\n")
    out, err = capfd.readouterr()
    assert out == "something else\n" and err == "native warning\n"


def test_progress_bars_are_disabled_for_the_studies(monkeypatch):
    import tqdm.std

    monkeypatch.setattr(tqdm.std.tqdm, "__init__", tqdm.std.tqdm.__init__)
    monkeypatch.setattr(tqdm.std.tqdm, "_ane_vit_quiet", False, raising=False)
    cli._quiet_progress_bars()
    assert tqdm.std.tqdm(range(3)).disable is True
    assert list(tqdm.std.tqdm(range(3))) == [0, 1, 2]

"""The README's command lines work as written on a fresh clone (issue 16).

Each ``python -m ane_vit...`` line of the README's "Command lines" section runs in a folder
that holds what a fresh clone holds (the committed ``results/``; the shipped weights are in
the package), with its slow step replaced by a stub: the line must get past every check
of its command line (no "already exists" for a committed file) and reach the work. A line
that reads a program (analysis, compress) must read one that an export line above writes.
"""

import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class Reached(Exception):
    """The command line got past its checks to the slow work."""


def _stop(*args, **kwargs):
    raise Reached


def _commands() -> list[list[str]]:
    section = (ROOT / "README.md").read_text().split("## Command lines", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in section.splitlines()]
    return [shlex.split(line)[2:] for line in lines if line.startswith("python -m ane_vit.")]


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "results", tmp_path / "results")  # the committed results, nothing else
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("ane_vit.export.cli.import_coremltools", lambda: None)  # seconds: not needed by the stubs
    monkeypatch.setattr("ane_vit.digits.cli.import_coremltools", lambda: None)
    monkeypatch.setattr("ane_vit.export.save.export_moat", _stop)
    monkeypatch.setattr("ane_vit.bench.cli.run_benchmark", _stop)
    monkeypatch.setattr("ane_vit.bench.routes.compare_local_routes", _stop)
    monkeypatch.setattr("ane_vit.digits.train.train", _stop)
    monkeypatch.setattr("ane_vit.digits.evaluate.evaluate", _stop)
    monkeypatch.setattr("ane_vit.digits.finetune.finetune_rows", _stop)
    monkeypatch.setattr("ane_vit.digits.crossval.crossval", _stop)
    monkeypatch.setattr("ane_vit.digits.threshold.threshold_study", _stop)
    monkeypatch.setattr("ane_vit.compress.study.compression_study", _stop)
    monkeypatch.setattr("ane_vit.latency.report.validation_report", _stop)
    monkeypatch.setattr("ane_vit.analysis.rules.check_rules", _stop)
    monkeypatch.setattr("ane_vit.coreai.save.export_moat", _stop)
    monkeypatch.setattr("ane_vit.coreai.compare.run_study", _stop)
    monkeypatch.setattr("ane_vit.coreai.accuracy.digits_accuracy", _stop)
    monkeypatch.setattr("ane_vit.coreai.optimize.evaluate", _stop)
    monkeypatch.setattr("ane_vit.coreai.cli._require", lambda parser, command: None)  # Core AI need not be installed
    return tmp_path


def test_every_readme_command_gets_past_its_checks_on_a_fresh_clone(fresh_clone, capsys):
    from ane_vit.analysis.cli import main as analysis
    from ane_vit.bench.cli import main as bench
    from ane_vit.compress.cli import main as compress
    from ane_vit.coreai.cli import main as coreai
    from ane_vit.coreai.optimize import main as coreai_optimize
    from ane_vit.digits.cli import main as digits
    from ane_vit.export.cli import main as export
    from ane_vit.latency.cli import main as latency

    mains = {"ane_vit.export": export, "ane_vit.bench": bench, "ane_vit.digits": digits, "ane_vit.compress": compress,
             "ane_vit.latency": latency, "ane_vit.analysis": analysis, "ane_vit.coreai": coreai,
             "ane_vit.coreai.optimize": coreai_optimize}
    commands = _commands()
    assert len(commands) >= 10
    written: set[str] = set()  # the programs the export lines write
    ran = []
    for module, *argv in commands:
        if module == "ane_vit.export":
            assert export([*argv, "--dry-run"]) == 0, argv
            written |= {str(Path(p)) for p in capsys.readouterr().out.split()}
        if module == "ane_vit.coreai" and argv[0] == "export":
            written.add(str(Path(argv[argv.index("-o") + 1])))
        aimodels = [a for a in argv if a.endswith(".aimodel") and argv[argv.index(a) - 1] != "-o"]
        if aimodels:
            assert str(Path(aimodels[0])) in written, f"{module} {argv}: no export line above writes {aimodels[0]}"
            continue
        inputs = [a for a in argv if a.endswith(".mlpackage") and argv[argv.index(a) - 1:argv.index(a)] != ["-o"]]
        if module in ("ane_vit.analysis", "ane_vit.compress", "ane_vit.latency") and inputs:
            if inputs == ["IN.mlpackage"]:
                continue  # a placeholder for the reader's program
            assert str(Path(inputs[0])) in written, f"{module} {argv}: no export line above writes {inputs[0]}"
            continue
        with pytest.raises(Reached):
            mains[module](argv)
        ran.append(module)
    assert {"ane_vit.export", "ane_vit.bench", "ane_vit.digits", "ane_vit.compress", "ane_vit.latency", "ane_vit.analysis",
            "ane_vit.coreai"} <= set(ran)

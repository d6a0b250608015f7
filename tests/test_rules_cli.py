"""``python -m ane_vit.analysis --rules``: a registry model checked from the command line,
and the usage errors (exit status 2, a message naming what was expected)."""

import json

import pytest

from ane_vit.analysis import RULES, main
from ane_vit.analysis.rules_survey import load_rules_findings
from ane_vit.deit import DEIT_CONFIGS
from ane_vit.moat import ARCHITECTURES


def _fails(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_rules_on_a_registry_model_as_json(capsys):
    # the digits model's structure (LePE_ADD, 10 classes) with random weights: the findings do not depend on them
    assert main(["--rules", "--arch", "micro-moat", "--pe-type", "LePE_ADD", "--num-classes", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "micro-moat ANE 64x64 global LePE_ADD"
    assert data["dtype"] == "float16" and data["input_shapes"] == [[1, 3, 64, 64]]
    assert {f["rule"] for f in data["findings"]} <= set(RULES)
    # the attention's query scale and LayerNormANE's eps are buffers now: no float literal is left
    literals = [f["module"] for f in data["findings"] if f["rule"] == "float_literal"]
    assert literals == [], literals
    assert any(f["module"] == "stages.2.0.attention" for f in data["findings"])
    # the committed survey's row of the digits model is what the checker finds today
    row = next(r for r in load_rules_findings()["results"] if r["name"] == "ours micro-moat 64")
    counts = {rid: 0 for rid in RULES}
    for f in data["findings"]:
        counts[f["rule"]] += 1
    assert counts == {rid: v["findings"] for rid, v in row["by_rule"].items()}


def test_rules_usage_errors(capsys):
    assert "--rules needs --arch NAME" in _fails(capsys, ["--rules"])
    assert "not a saved program; got 'm.mlpackage'" in _fails(capsys, ["m.mlpackage", "--rules", "--arch", "tiny-moat-0"])
    assert "invalid choice: 'tiny-moat-9'" in _fails(capsys, ["--rules", "--arch", "tiny-moat-9"])
    assert "expected a saved .mlpackage to analyse (or --rules --arch NAME" in _fails(capsys, [])
    err = _fails(capsys, ["--rules", "--arch", "tiny-moat-0", "--size", "100", "100"])
    assert "tiny-moat-0: image height and width must be positive multiples of 32, got (100, 100)" in err


def test_survey_refuses_to_replace_without_overwrite(capsys, tmp_path):
    path = tmp_path / "rules.json"
    path.write_text("{}")
    assert f"{path} exists; pass overwrite=True (--overwrite) to replace it" in _fails(capsys, ["--rules", "--survey", str(path)])


_REGISTRY = [*ARCHITECTURES, *DEIT_CONFIGS]


@pytest.mark.export_sweep
@pytest.mark.parametrize("reference", [False, True], ids=["ane", "reference"])
@pytest.mark.parametrize("arch", _REGISTRY)
def test_rules_on_every_registry_model(arch, reference, capsys):
    """Opt-in (--run-export-sweep): every registry model through --rules; ours has no error."""
    argv = ["--rules", "--arch", arch, "--json"] + (["--reference"] if reference else [])
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    errors = sorted({f["rule"] for f in data["findings"] if f["severity"] == "error"})
    assert data["findings"] and (reference or errors == []), errors

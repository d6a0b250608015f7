"""``python -m ane_vit.analysis --rules``: a registry model checked from the command line,
and the usage errors (exit status 2, a message naming what was expected)."""

import json

import pytest

from ane_vit.analysis import RULES, main


def _fails(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_rules_on_a_registry_model_as_json(capsys):
    assert main(["--rules", "--arch", "micro-moat", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "micro-moat ANE 64x64 global SINGLE_HEAD_RPE"
    assert data["dtype"] == "float16" and data["input_shapes"] == [[1, 3, 64, 64]]
    rules = {f["rule"] for f in data["findings"]}
    assert rules <= set(RULES) and "layout_moves_last_axis" in rules
    # the attention's query scale is a buffer now: only LayerNormANE's eps is a float literal (one per norm)
    literals = [f for f in data["findings"] if f["rule"] == "float_literal"]
    assert literals and all(f["module"].endswith("attn_norm") for f in literals), [f["module"] for f in literals]
    assert any(f["module"] == "stages.2.0.attention" for f in data["findings"])


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

"""``ane_vit.latency``: per-op features by hand, the fit against the committed data, the interval's
coverage as reported, refusals, and a program -> features -> estimate path on a tiny converted model."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")
pytest.importorskip("scipy")

from ane_vit.latency import (  # noqa: E402
    DEFAULT_FORM,
    LatencyModel,
    calibrated_chips,
    calibrated_model,
    calibration_points,
    conformal_halfwidth,
    estimate,
    features,
    fit_model,
    nested_coverage,
    op_groups,
    summary_features,
)
from ane_vit.latency.model import _point_regressors  # noqa: E402
from ane_vit.latency.report import (  # noqa: E402
    CALIBRATION_FILE,
    ESTIMATES_FILE,
    EXTERNAL_FILE,
    MODEL_FILE,
    load_calibration,
    load_json,
    results_path,
)

# --------------------------------------------------------------------------- features by hand


def _mil_program(dtype: str = "fp16"):
    """conv 3->8 (3x3, pad 1) on (1, 3, 8, 40), relu, transpose: every number countable by hand."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    w = np.full((8, 3, 3, 3), 0.1, np.float16 if dtype == "fp16" else np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 40), dtype=getattr(types, dtype))], opset_version=ct.target.iOS16)
    def prog(x):
        y = mb.conv(x=x, weight=w, pad_type="same")  # (1, 8, 8, 40)
        y = mb.relu(x=y)  # (1, 8, 8, 40)
        return mb.transpose(x=y, perm=[0, 1, 3, 2])  # (1, 8, 40, 8)

    return prog


# A (.., 40) fp16 row is 80 B, padded to 128 B; a (.., 8) row is 16 B, padded to 64 B.
_IN = 3 * 8 * 128  # conv input (1, 3, 8, 40), padded
_MID = 8 * 8 * 128  # conv and relu outputs (1, 8, 8, 40), padded
_OUT = 8 * 40 * 64  # transpose output (1, 8, 40, 8), padded
_CONV_FLOPS = 2 * (8 * 8 * 40) * (3 * 3 * 3)  # 2 x MACs: each output sums C_in x 3 x 3 products
_W = 8 * 3 * 3 * 3 * 2 + 4 * 4 + 2 * 4 + 2 * 4  # conv weight (fp16) + its int32 pad, strides, dilations vectors


def test_op_groups_by_hand():
    groups = {g["op_type"]: g for g in op_groups(_mil_program())}
    assert set(groups) == {"conv", "relu", "transpose"}
    conv, relu, tr = groups["conv"], groups["relu"], groups["transpose"]
    assert (conv["kind"], conv["flops"], conv["in_bytes"], conv["out_bytes"], conv["weight_bytes"]) == ("compute", _CONV_FLOPS, _IN, _MID, _W)
    assert (relu["kind"], relu["flops"], relu["in_bytes"], relu["out_bytes"], relu["weight_bytes"]) == ("other", 0, _MID, _MID, 0)
    assert (tr["kind"], tr["in_bytes"], tr["out_bytes"]) == ("layout", _MID, _OUT)
    assert all(g["count"] == 1 for g in groups.values())


@pytest.mark.parametrize("balance", [1.0, 25.0, 400.0])
def test_features_by_hand(balance):
    f = features(op_groups(_mil_program()), balance)
    assert f["roofline"] == max(_CONV_FLOPS, balance * (_IN + _MID + _W))  # per-op roofline of the conv
    assert f["other_bytes"] == 2 * _MID  # relu reads and writes
    assert f["layout_bytes"] == _OUT  # what the transpose writes
    assert f["ops"] == 3


def test_identical_ops_are_merged_with_a_count():
    g = [{"op_type": "add", "kind": "other", "flops": 0, "in_bytes": 10, "out_bytes": 5, "weight_bytes": 0, "count": 3},
         {"op_type": "conv", "kind": "compute", "flops": 100, "in_bytes": 1, "out_bytes": 1, "weight_bytes": 2, "count": 2}]
    assert features(g, 10.0) == {"roofline": 2 * 100.0, "other_bytes": 45.0, "layout_bytes": 0.0, "ops": 5.0}
    assert features(g, 50.0)["roofline"] == 2 * 50.0 * 4  # memory-bound now: 4 bytes x 50 FLOP/B, twice
    assert summary_features(g) == {"flops": 200.0, "weight_bytes": 4.0, "activation_bytes_padded": 17.0, "ops": 5.0}


def test_bad_feature_input():
    with pytest.raises(ValueError, match=r"balance \(FLOP per byte\) must be positive, got 0"):
        features([], 0)
    with pytest.raises(ValueError, match=r"lacks \['weight_bytes'\]"):
        features([{"kind": "other", "flops": 0, "in_bytes": 0, "out_bytes": 0, "count": 1}], 1.0)
    with pytest.raises(ValueError, match=r"kind must be one of \('compute', 'layout', 'other'\), got 'elementwise'"):
        features([{"kind": "elementwise", "flops": 0, "in_bytes": 0, "out_bytes": 0, "weight_bytes": 0, "count": 1}], 1.0)


def test_conformal_halfwidth_by_hand():
    scores = [0.1 * k for k in range(1, 11)]  # 0.1 .. 1.0
    assert conformal_halfwidth(scores, 0.8) == pytest.approx(0.9)  # ceil(11 x 0.8) = 9th smallest
    assert conformal_halfwidth([-0.5, 0.2, 0.3, -0.1, 0.4], 0.5) == pytest.approx(0.3)  # |.|, ceil(6 x 0.5) = 3rd
    assert math.isinf(conformal_halfwidth([0.1, 0.2, 0.3], 0.8))  # too few scores for 80 %


# --------------------------------------------------------------------------- the committed data


@pytest.fixture(scope="module")
def calibration():
    return load_calibration()


@pytest.fixture(scope="module")
def points(calibration):
    return calibration_points(calibration, "calibration", "A14")


@pytest.fixture(scope="module")
def committed():
    return load_json(results_path(MODEL_FILE))


def test_calibration_rows_are_published_and_checked(calibration):
    import csv

    table = {(r["model"], r["chip"]): r for r in csv.DictReader(open(results_path("published_latency.csv"), encoding="utf-8"))}
    rows = calibration["rows"]
    assert {r["use"] for r in rows} == {"calibration", "out_of_chip"}
    for r in rows:
        src = table[(r["model"], r["chip"])]
        assert r["published_ms"] == float(src["published_ms"]) > 0
        assert src["source"].startswith("https://") and src["check"].startswith("checked:"), r["model"]
        prog = calibration["programs"][r["program"]]
        assert prog["input_shape"] == [1, 3, r["input_size"], r["input_size"]]
        s = summary_features(prog["op_groups"])
        assert (s["flops"], s["ops"]) == (prog["summary"]["flops"], prog["summary"]["ops"])
    assert {r["chip"] for r in rows if r["use"] == "calibration"} == {"A14"}
    # MobileOne-S0 reparameterised: 89 ops (455 with its training-time branches)
    assert calibration["programs"]["mobileone_s0@224"]["summary"]["ops"] == 89


def test_fast_regressors_equal_the_reference(points):
    for p in points[::5]:
        for r in (8.0, 300.0):
            fast = _point_regressors(p, r)
            ref = features(p.groups, r) | summary_features(p.groups)
            assert fast == pytest.approx(ref, rel=1e-12)


def test_refit_reproduces_the_committed_model(points, committed):
    model = fit_model(points, DEFAULT_FORM)
    for stored in (committed["model"], calibrated_model("A14").to_dict()):
        assert stored["form"] == DEFAULT_FORM and stored["balance"] == pytest.approx(model.balance)
        assert stored["coefficients"] == pytest.approx(model.coefficients, rel=1e-6, abs=1e-18)
        assert stored["overheads_ms"] == pytest.approx(model.overheads_ms, rel=1e-6, abs=1e-12)
        assert stored["halfwidth"] == pytest.approx(model.halfwidth, rel=1e-9)
    assert all(v >= 0 for v in [*model.coefficients.values(), *model.overheads_ms.values()])


def test_interval_coverage_as_reported(points, committed):
    cov = committed["coverage"]
    nested = nested_coverage(points, DEFAULT_FORM)
    assert nested["coverage"] == pytest.approx(cov["nested"])
    assert cov["nested"] >= 0.8 and cov["lofo_in_sample"] >= 0.8  # the stated 80 % holds on unseen families
    inside = [r["inside"] for r in committed["points"]]
    assert np.mean(inside) == pytest.approx(cov["lofo_in_sample"])
    for r in committed["points"]:
        assert r["low_ms"] < r["lofo_estimate_ms"] < r["high_ms"]
        edge = abs(math.log(r["published_ms"] / r["lofo_estimate_ms"])) / committed["model"]["halfwidth"]
        assert r["inside"] == (edge <= 1 + 1e-9)
        if abs(edge - 1) > 1e-9:  # off the edge, the interval's ends say the same
            assert r["inside"] == (r["low_ms"] <= r["published_ms"] <= r["high_ms"])


def test_estimate_files_stay_out_of_the_measurements_glob():
    # chapter 7 reads every results/latency_*.json as a device measurement
    from fnmatch import fnmatch

    results = results_path("x").parent
    for name in (CALIBRATION_FILE, MODEL_FILE, ESTIMATES_FILE, EXTERNAL_FILE):
        path = results_path(name)
        assert path.exists() and not (path.parent == results and fnmatch(path.name, "latency_*.json")), name
    assert all("kind" in r for p in results.glob("latency_*.json") for r in json.loads(p.read_text())["results"])


def test_estimates_file_holds_only_estimates():
    doc = load_json(results_path(ESTIMATES_FILE))
    assert "estimate" in doc["kinds"] and "measured" not in json.dumps(doc["kinds"])
    for r in doc["rows"]:
        if "estimate" not in r:
            continue
        e = r["estimate"]
        assert e["kind"] == "estimate" and e["chip"] == "A14" and e["low_ms"] < e["estimate_ms"] < e["high_ms"], r["name"]


# --------------------------------------------------------------------------- refusals


def test_refuses_a_chip_without_calibration_data():
    assert calibrated_chips() == ["A14"]
    with pytest.raises(ValueError, match=r"no calibration data for chip 'A17 Pro': the latency estimate is calibrated only for \['A14'\]"):
        estimate(_mil_program(), chip="A17 Pro")
    with pytest.raises(ValueError, match=r"the model given is calibrated for 'A14', not for chip 'M1'"):
        estimate(_mil_program(), chip="M1", model=calibrated_model("A14"))
    with pytest.raises(TypeError, match="chip must be a chip name such as 'A14', got int"):
        calibrated_model(14)


def test_bad_model_dict():
    with pytest.raises(ValueError, match=r"missing \['halfwidth'\]"):
        LatencyModel.from_dict({k: v for k, v in calibrated_model().to_dict().items() if k != "halfwidth"})


def test_missing_program(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such .mlpackage: '.*none.mlpackage' does not exist; give the path of a .mlpackage folder"):
        estimate(tmp_path / "none.mlpackage")
    with pytest.raises(TypeError, match="model must be a coremltools MLModel, a MIL Program or a path to an .mlpackage, got int"):
        estimate(42)


def test_missing_results_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected the results file .*nothing.json'; it does not exist"):
        load_calibration(tmp_path / "nothing.json")


# --------------------------------------------------------------------------- program -> features -> estimate


def test_estimate_of_a_hand_counted_program():
    m = calibrated_model("A14")
    e = estimate(_mil_program())
    f = features(op_groups(_mil_program()), m.balance)
    by_hand = sum(m.coefficients[c] * f[c] for c in m.columns) + m.overheads_ms[m.reference_source]
    assert e.estimate_ms == pytest.approx(by_hand, rel=1e-12)
    assert (e.low_ms, e.high_ms) == pytest.approx((by_hand * math.exp(-m.halfwidth), by_hand * math.exp(m.halfwidth)))
    assert e.kind == "estimate" and e.chip == "A14" and e.flags == () and "ESTIMATE" in str(e)


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)

    def forward(self, x):  # (1, 3, 32, 32) -> (1, 16, 32, 32)
        return self.dw(torch.relu(self.conv(x)))


@pytest.fixture(scope="module")
def tiny_program():
    from ane_vit.export import to_mlprogram

    torch.manual_seed(0)
    return to_mlprogram(_Tiny().eval(), torch.rand(1, 3, 32, 32))


def test_estimate_of_a_converted_model_in_memory_and_saved(tiny_program, tmp_path):
    fp16 = tiny_program
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean fp16 program raises no readiness warning
        e = estimate(fp16)
    path = tmp_path / "tiny.mlpackage"
    fp16.save(str(path))
    assert estimate(str(path)).estimate_ms == pytest.approx(e.estimate_ms, rel=1e-12)
    m = calibrated_model()
    # conv 3->16 and depthwise 16->16 on 32x32: FLOPs counted by hand
    assert e.program["flops"] == 2 * 16 * 32 * 32 * (3 * 9) + 2 * 16 * 32 * 32 * 9
    assert e.estimate_ms == pytest.approx(sum(e.terms_ms.values()))
    assert e.estimate_ms > m.overheads_ms[m.reference_source]


def test_float32_program_is_flagged():
    with pytest.warns(UserWarning, match="parts of this program may not run on the Neural Engine .*float32_compute"):
        e = estimate(_mil_program("fp32"))
    assert any(f.startswith("float32_compute x") for f in e.flags)
    assert "parts may not run on the Neural Engine" in str(e)

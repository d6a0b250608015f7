"""ane_vit.device: Mac-only measurement. Off macOS: the errors; everywhere: the JSON format."""

import json
import sys
from datetime import datetime

import numpy as np
import pytest
import torch
from torch import nn

from ane_vit import device
from ane_vit.device import compute_plan, device_provenance, measure_latency, save_results
from ane_vit.export import export_model, to_mlprogram

not_mac = pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal off macOS")


def _fake_macos(monkeypatch, version):
    monkeypatch.setattr(device.sys, "platform", "darwin")
    monkeypatch.setattr(device.platform, "mac_ver", lambda: (version, ("", "", ""), "arm64"))


@not_mac
def test_refused_off_macos_before_touching_the_model(tmp_path):
    missing = tmp_path / "missing.mlpackage"  # not even there: the platform is checked first
    with pytest.raises(RuntimeError, match=r"^measure_latency requires macOS 13\.0\+ with the Core ML runtime; this is Linux"):
        measure_latency(missing)
    with pytest.raises(RuntimeError, match=r"^compute_plan requires macOS 14\.4\+ with the Core ML runtime; this is Linux") as err:
        compute_plan(missing)
    assert "cannot run them" in str(err.value)


def test_refused_on_old_macos(tmp_path, monkeypatch):
    _fake_macos(monkeypatch, "12.6")
    with pytest.raises(RuntimeError, match=r"measure_latency requires macOS 13\.0\+ .*; this is macOS 12\.6\.$"):
        measure_latency(tmp_path / "m.mlpackage")
    _fake_macos(monkeypatch, "14.2.1")
    with pytest.raises(RuntimeError, match=r"compute_plan requires macOS 14\.4\+ .*; this is macOS 14\.2\.1\.$"):
        compute_plan(tmp_path / "m.mlpackage")
    # 14.2.1 is enough to predict: the next check (the path) is reached.
    with pytest.raises(FileNotFoundError, match="no such model: .*m.mlpackage"):
        measure_latency(tmp_path / "m.mlpackage")


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"compute_units must be one of \['ALL', 'CPU_ONLY', 'CPU_AND_GPU', 'CPU_AND_NE'\], got 'NE'"):
        measure_latency(tmp_path, compute_units="NE")
    with pytest.raises(ValueError, match="runs must be a positive int, got 0"):
        measure_latency(tmp_path, runs=0)
    with pytest.raises(ValueError, match="warmup must be a non-negative int, got -1"):
        measure_latency(tmp_path, warmup=-1)
    with pytest.raises(ValueError, match="compute_units must be one of"):
        compute_plan(tmp_path, compute_units="GPU")


def test_latency_summary_nearest_rank():
    s = device._latency_summary([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    assert s == {"median_ms": 5.5, "p90_ms": 9.0, "min_ms": 1.0, "mean_ms": 5.5}
    assert device._latency_summary([3.0])["p90_ms"] == 3.0
    with pytest.raises(ValueError, match="at least one timing"):
        device._latency_summary([])


def test_random_inputs_follow_the_model_description():
    x = torch.rand(1, 3, 8, 8)
    tensor_spec = to_mlprogram(nn.Conv2d(3, 4, 1), x).get_spec()
    (value,) = device._random_inputs(tensor_spec).values()
    assert value.shape == (1, 3, 8, 8) and value.dtype == np.float16  # iOS16 + float16: a float16 input
    tensor_spec = to_mlprogram(nn.Conv2d(3, 4, 1), x, compute_precision="float32").get_spec()
    assert device._random_inputs(tensor_spec)["x"].dtype == np.float32
    image_spec = to_mlprogram(nn.Conv2d(3, 4, 1), torch.rand(1, 3, 8, 12), ["image"], image_input=True).get_spec()
    image = device._random_inputs(image_spec)["image"]
    assert image.mode == "RGB" and image.size == (12, 8)  # PIL: (W, H)


def _result(units, date, chip="Apple M2"):
    prov = {"platform": "macOS-14.5-arm64", "device_model": "Mac14,2", "chip": chip, "macos": "14.5",
            "python": "3.11.7", "coremltools": "9.0", "torch": "2.13.0", "numpy": "2.2.6", "ane_vit": "0.1.0",
            "date": date, "compute_units": units}
    return {"kind": "measured", "model": "m.mlpackage", "compute_units": units, "median_ms": 1.5, "provenance": prov}


def test_save_results_format(tmp_path):
    rows = [_result("CPU_AND_NE", "2026-01-02T10:00:00+00:00"), _result("CPU_ONLY", "2026-01-02T09:00:00+00:00")]
    path = save_results(rows, tmp_path / "sub" / "device.json")
    data = json.loads(path.read_text())
    assert set(data) == {"provenance", "results"}
    prov = data["provenance"]
    assert prov["device_model"] == "Mac14,2" and prov["chip"] == "Apple M2"
    assert prov["date"] == "2026-01-02T09:00:00+00:00" and "compute_units" not in prov
    assert [r["compute_units"] for r in data["results"]] == ["CPU_AND_NE", "CPU_ONLY"]
    assert all(r["kind"] == "measured" and "provenance" not in r and "date" in r for r in data["results"])
    # a plan keeps its own kind; a bare dict gets "measured" when the provenance is given
    save_results({"kind": "compute_plan", "model": "m"}, path, provenance={"device_model": "Mac14,2"})
    assert json.loads(path.read_text())["results"][0]["kind"] == "compute_plan"
    save_results({"median_ms": 2.0}, path, provenance={"device_model": "Mac14,2"})
    assert json.loads(path.read_text())["results"][0]["kind"] == "measured"


def test_save_results_refuses_mixed_or_missing_provenance(tmp_path):
    mixed = [_result("ALL", "2026-01-02T10:00:00+00:00"), _result("ALL", "2026-01-02T10:00:00+00:00", chip="Apple M1")]
    with pytest.raises(ValueError, match="result 1 was measured with a different provenance"):
        save_results(mixed, tmp_path / "x.json")
    with pytest.raises(ValueError, match="no provenance: pass provenance="):
        save_results([{"median_ms": 1.0}], tmp_path / "x.json")
    with pytest.raises(TypeError, match="each result must be a dict, got list at index 0"):
        save_results([[1.0]], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_device_provenance_fields():
    prov = device_provenance()
    assert {"platform", "device_model", "chip", "macos", "python", "coremltools", "torch", "ane_vit", "date"} <= set(prov)
    assert datetime.fromisoformat(prov["date"]).tzinfo is not None
    if sys.platform != "darwin":
        assert prov["device_model"] == "unknown" and prov["macos"] == "n/a"


@pytest.mark.macos
def test_measure_latency_and_compute_plan_on_this_mac(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 32, 1))
    path = export_model(model, torch.rand(1, 3, 64, 64), tmp_path / "m.mlpackage")
    results = []
    for units in ("CPU_ONLY", "CPU_AND_NE"):
        r = measure_latency(path, compute_units=units, runs=5, warmup=1)
        assert r["kind"] == "measured" and r["compute_units"] == units and r["runs"] == 5
        assert r["load_ms"] > 0 and r["first_prediction_ms"] > 0
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["provenance"]["device_model"] != "unknown" and r["provenance"]["macos"] != "n/a"
        results.append(r)
    data = json.loads(save_results(results, tmp_path / "device.json").read_text())
    assert len(data["results"]) == 2 and data["provenance"]["chip"] == results[0]["provenance"]["chip"]

    version = tuple(int(p) for p in device.platform.mac_ver()[0].split("."))
    if version < (14, 4):
        with pytest.raises(RuntimeError, match="requires macOS 14.4"):
            compute_plan(path)
        return
    plan = compute_plan(path)
    ops = plan["operations"]
    assert any(op["op"] == "conv" for op in ops)
    assert all(op["preferred_device"] in {"CPU", "GPU", "ANE"} for op in ops)
    assert sum(plan["ops_by_device"].values()) == len(ops)

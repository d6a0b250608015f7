"""ane_vit.coreai.optimize: coreai-opt on the digits model, Core AI programs run by Apple's runtime.

The default run checks the pipeline for real on a fixed subset (one test image per class):
2-bit palettization and int8 weights are compressed, converted and run, and must give the
labels and the file size that results/coreai_compression_digits.json records for the same
images (its programs have batch 40; these batch 10: a program's size does not depend on it,
and neither does an image's label). W8A8 (graph-mode calibration: tens of seconds each) is opt-in:
ANE_VIT_COREAI_W8A8=1.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("coreai_opt", reason="coreai-opt is not installed (Core AI wheels: CPython >= 3.11, Linux x86-64 / macOS 26+)")
pytest.importorskip("coreai_torch", reason="coreai-torch is not installed")

from ane_vit.coreai import optimize as opt  # noqa: E402
from ane_vit.digits import load_data, load_model  # noqa: E402
from ane_vit.digits.evaluate import stratified_subset  # noqa: E402
from ane_vit.testing import assert_parity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / opt.RESULTS_FILE
BATCH = 10  # the tests' programs
W8A8 = pytest.mark.skipif(os.environ.get("ANE_VIT_COREAI_W8A8") != "1",
                          reason="W8A8 graph-mode calibration takes minutes: set ANE_VIT_COREAI_W8A8=1 to run it")


@pytest.fixture(scope="module")
def data():
    x_train, _, x_test, y_test = load_data()
    keep = stratified_subset(y_test, 1)  # 10 images, one per class: indices into the 360 test images
    return x_train, x_test, y_test, keep


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS.read_text())


@pytest.fixture(scope="module")
def prepared():
    torch.set_num_threads(1)
    return opt.prepare_for_compression(load_model("ane"))


def _row(results, name):
    return next(r for r in results["rows"] if r["method"] == name)


# --------------------------------------------------------------------------- the model


def test_prepare_for_compression_is_the_same_function(data, prepared):
    from ane_vit.layers import MBConv

    ane = load_model("ane")
    x = data[1][:20]
    with torch.no_grad():
        report = assert_parity(ane(x), prepared(x), atol=1e-4, min_psnr=100)
    assert report.max_abs < 1e-4
    blocks = [m for m in prepared.modules() if isinstance(m, MBConv)]
    assert len(blocks) == 5
    for b in blocks:  # every MBConv norm now lives in a conv's weights and bias
        assert not b.fold_pre_norm
        assert all(isinstance(getattr(b, n), torch.nn.Identity) for n in ("pre_norm", "expand_norm", "depthwise_norm", "project_norm"))
        assert b.expand.bias is not None and b.project.bias is not None
    assert all(m.fold_pre_norm for m in ane.modules() if isinstance(m, MBConv)), "the original must stay untouched"
    assert not prepared.training


def test_conv_after_bn_is_exact_and_refuses_a_padded_conv():
    bn = torch.nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    conv = torch.nn.Conv2d(4, 6, 1, bias=False).eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(opt._conv_after_bn(bn, conv)(x), conv(bn(x)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="only into a following 1x1 dense conv"):
        opt._conv_after_bn(bn, torch.nn.Conv2d(4, 6, 3, padding=1))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        opt.prepare_for_compression("micro-moat")


# --------------------------------------------------------------------------- the pipeline, for real


def test_palettize_2_bit_for_real(data, prepared, results, tmp_path):
    x_train, x_test, y_test, keep = data
    row = _row(results, "palettize 2 bit")
    model, _ = opt.compress(prepared, opt.METHODS["palettize 2 bit"], x_train[:BATCH], batch=BATCH)
    luts = [m for m in model.modules() if hasattr(m, "lut") and hasattr(m, "indices")]
    assert len(luts) == row["weights_compressed"]["tensors"] > 30
    for m in luts:  # 2 bits: a table of at most 4 values, every index points into it
        assert m.lut.numel() <= 4 and int(m.indices.max()) < 4
        dense = m.lut.flatten()[m.indices.long()]
        assert dense.unique().numel() <= 4
    assert opt.compressed_weights(model) == {k: row["weights_compressed"][k] for k in ("tensors", "elements")}
    path = opt._export_aimodel(model, tmp_path / "p2.aimodel", BATCH, fp16=True)
    labels = opt._run_aimodel(path, x_test[keep], BATCH, fp16=True).argmax(1)
    assert labels.tolist() == [row["labels"][i] for i in keep.tolist()]
    from ane_vit.export import package_nbytes

    assert abs(package_nbytes(path) - row["bytes"]) <= 1e-3 * row["bytes"]  # a few bytes vary between conversions


def test_int8_weights_for_real(data, prepared, results, tmp_path):
    x_train, x_test, y_test, keep = data
    row = _row(results, "int8 weights per channel")
    model, _ = opt.compress(prepared, opt.METHODS["int8 weights per channel"], x_train[:BATCH], batch=BATCH)
    stored = {n: b for n, b in model.named_buffers() if n.endswith("quantized_data")}
    assert len(stored) == row["weights_compressed"]["tensors"]
    for name, q in stored.items():  # int8, one symmetric scale per output channel
        assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
        scale = dict(model.named_buffers())[name.replace("quantized_data", "scale")]
        assert scale.shape[0] == q.shape[0] and scale[0].numel() == 1
    path = opt._export_aimodel(model, tmp_path / "int8.aimodel", BATCH, fp16=True)
    some = keep[:7]  # fewer images than the program's batch: the runner pads, then drops the padding
    labels = opt._run_aimodel(path, x_test[some], BATCH, fp16=True).argmax(1)
    assert labels.tolist() == [row["labels"][i] for i in some.tolist()]
    from ane_vit.export import package_nbytes

    nbytes = package_nbytes(path)
    assert abs(nbytes - row["bytes"]) <= 1e-3 * row["bytes"]  # a few bytes vary between conversions
    # int8 weights are a quarter of float32 ones; the float32 program is ~3x larger in all
    assert 2.8 < _row(results, "float32")["bytes"] / nbytes < 4.0


# --------------------------------------------------------------------------- the results file


def test_results_file_is_consistent(data, results):
    _, x_test, y_test, keep = data
    assert results["split"]["n_test"] == 360 and not results["split"]["subset"]
    assert list(r["method"] for r in results["rows"]) == list(opt.METHODS)
    # The agreement reference is PyTorch float32. The float32 program recorded agreement 1.0 with it;
    # spot-check that on the subset, then every row's agreement must follow from the labels.
    fp32 = _row(results, "float32")["labels"]
    assert _row(results, "float32")["agreement_with_fp32"] == 1.0
    with torch.no_grad():
        assert load_model("reference")(x_test[keep]).argmax(1).tolist() == [fp32[i] for i in keep.tolist()]
    base = _row(results, "float16")["bytes"]
    y = y_test.tolist()
    for r in results["rows"]:
        labels = r["labels"]
        assert len(labels) == r["n"] == 360
        correct = sum(a == b for a, b in zip(labels, y))
        assert r["correct"] == correct and math.isclose(r["accuracy"], correct / 360)
        assert r["wilson_95"] == pytest.approx(list(opt.wilson_interval(correct, 360)))
        assert math.isclose(r["agreement_with_fp32"], sum(a == b for a, b in zip(labels, fp32)) / 360)
        assert math.isclose(r["ratio_to_float16"], base / r["bytes"])
    prov = results["provenance"]
    assert prov["command"].startswith("python -m ane_vit.coreai.optimize")
    assert {"date", "machine", "versions"} <= set(prov) and prov["versions"]["coreai-opt"] == "0.4.0"


def test_w8a8_evidence_follows_the_moving_average_rule(data, results):
    """The recorded collapse, against the observer's documented rule r_k = 0.99 r_(k-1) + 0.01 m_k:
    from a zero example input (r_0 = 0) the model input's range after the calibration batches is
    a few percent of what the images span; from the first calibration batch it is all of it."""
    x_train = data[0]
    study = results["w8a8_study"]
    batch = study["batch"]
    batches = [x_train[i:i + batch] for i in range(0, opt.CALIBRATION_IMAGES, batch)]

    def calibrated(start: tuple[float, float]) -> float:  # running (min, max), then every calibration batch
        low, high = start
        for b in batches:
            low, high = 0.99 * low + 0.01 * float(b.min()), 0.99 * high + 0.01 * float(b.max())
        return max(abs(low), abs(high))

    zero, first = (study["per_quantizer"][k]["nodes"][0] for k in opt._EVIDENCE)
    assert zero["input"] == first["input"] == "x"  # the first quantizer sits on the model input
    assert zero["calibrated_max_abs"] == pytest.approx(calibrated((0.0, 0.0)), rel=1e-5)
    assert zero["calibrated_max_abs"] < 0.05
    # prepare() saw the first batch, which starts the range; calibration then sees every batch
    assert first["calibrated_max_abs"] == pytest.approx(calibrated((float(batches[0].min()), float(batches[0].max()))), rel=1e-5)
    assert zero["observed_max_abs"] == first["observed_max_abs"] == pytest.approx(1.0)
    worst = study["per_quantizer"][opt._EVIDENCE[0]]
    assert worst["first_below_10_db"]["index"] == 0, "the collapse starts at the model input"


def test_coremltools_rows_match_chapter_8(results):
    digits = json.loads((ROOT / "results" / "digits.json").read_text())
    stages = {s["stage"]: s for s in digits["stages"]}
    for r in results["rows"]:
        ct = r["coremltools"]
        stage = opt.METHODS[r["method"]].coremltools_stage
        if stage is None:
            assert ct is None
            continue
        # stale copy? refresh with: python -m ane_vit.coreai.optimize --refresh-coremltools
        assert ct["stage"] == stage and ct["bytes"] == stages[stage]["bytes"]
        assert ct["accuracy"] == stages[stage]["accuracy"]
        assert ct["agreement_with_fp32"] == stages[stage]["agreement_with_fp32"]
        assert ct["correct"] == 360 - stages[stage]["errors"]


def test_markdown_table(results):
    table = opt.markdown_table(results).splitlines()
    assert len(table) == 2 + len(results["rows"])
    widths = {line.count("|") for line in table}
    assert widths == {9}, "every line has the header's 8 cells"
    p4 = _row(results, "palettize 4 bit")
    line = next(ln for ln in table if ln.startswith("| palettize 4 bit |"))
    assert f"| {p4['bytes'] / 1e3:.0f} |" in line and f"{100 * p4['accuracy']:.2f} (" in line
    assert f"| {p4['coremltools']['bytes'] / 1e3:.0f} |" in line
    with pytest.raises(ValueError, match="results must be the dict of results/coreai_compression_digits.json"):
        opt.markdown_table({"rows": []})


# --------------------------------------------------------------------------- statistics and arguments


def test_wilson_interval_against_hand_computed_values():
    # 0 of 10: the upper end is z^2 / (n + z^2) (closed form when p = 0)
    z2 = 1.959963984540054**2
    assert opt.wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert opt.wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    # 5 of 10: Newcombe (1998), table I, Wilson score: 0.2366 - 0.7634
    low, high = opt.wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    for bad in ((11, 10), (-1, 10), (1, 0), (1.0, 10), (True, 10)):
        with pytest.raises(ValueError, match="need integers 0 <= correct <= n, n > 0"):
            opt.wilson_interval(*bad)


def test_method_and_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="nbits is for kind 'palettize' only"):
        opt.CoreAIMethod("palettize")
    with pytest.raises(ValueError, match="kind must be one of"):
        opt.CoreAIMethod("prune")
    with pytest.raises(ValueError, match="nbits must be one of 1, 2, 3, 4, 6, 8, got 5"):
        opt.CoreAIMethod("palettize", nbits=5)
    with pytest.raises(ValueError, match="example must be one of"):
        opt.CoreAIMethod("w8a8", example="ones")
    with pytest.raises(ValueError, match=r"methods must be names of METHODS .*\['palettize 3 bit'\]"):
        opt.evaluate(methods=["palettize 3 bit"])
    with pytest.raises(ValueError, match="limit must be an int >= 10"):
        opt.evaluate(limit=5)
    with pytest.raises(FileNotFoundError, match="no chapter 8 results at .*nothing.json"):
        opt.evaluate(digits_json=tmp_path / "nothing.json")
    with pytest.raises(ValueError, match=r"w8a8 needs calibration images \(N >= batch = 40"):
        opt.compress(torch.nn.Identity(), opt.METHODS["W8A8, default config, example = 1st calibration batch"])


def test_command_line_errors(tmp_path, capsys):
    existing = tmp_path / "out.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit) as exc:
        opt.main(["--output", str(existing)])
    assert exc.value.code == 2 and "already exists; pass --overwrite to replace it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        opt.main(["--output", str(tmp_path / "none.json"), "--markdown"])
    assert "does not exist: run without --markdown/--refresh-coremltools first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        opt.main(["--output", str(tmp_path / "new.json"), "--methods", "int4"])
    assert "methods must be names of METHODS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        opt.main(["--output", str(tmp_path / "new.json"), "--digits-json", str(tmp_path / "missing.json")])
    assert "no chapter 8 results at" in capsys.readouterr().err
    assert opt.main(["--output", str(RESULTS), "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| method | Core AI kB |")


# --------------------------------------------------------------------------- W8A8 (opt-in)


@W8A8
def test_w8a8_moving_average_starts_from_the_example_input(data, prepared):
    """The collapse, by the documented rule: a zero example input starts every activation range at 0,
    and each calibration batch moves it 1 % of the way: after k batches the input's range is
    (1 - 0.99^k) of the images' (which span [-1, 1])."""
    from coreai_opt.quantization import Quantizer

    x_train, x_test, y_test, keep = data
    batch, k = 10, 4
    for example, observer in (("zeros", "moving_average"), ("calibration", "moving_average"), ("zeros", "global_minmax")):
        method = opt.CoreAIMethod("w8a8", example=example, observer=observer)
        quantizer = Quantizer(copy.deepcopy(prepared), opt._w8a8_config(observer))
        model = quantizer.prepare((opt._example(method, x_train, batch),))
        with quantizer.calibration_mode(), torch.no_grad():
            for i in range(0, k * batch, batch):
                model(x_train[i:i + batch])
        name, source, first = opt._activation_quantizers(model)[0]
        assert source == "x", "the first activation quantizer sits on the model input"
        peak = max(float(x_train[i:i + batch].abs().max()) for i in range(0, k * batch, batch))
        calibrated = float(first.qparams_calculator.running_max.abs().max())
        with torch.no_grad():
            agree = float((opt._labels(model, x_test[keep], batch) == load_model("reference")(x_test[keep]).argmax(1)).double().mean())
        if example == "zeros" and observer == "moving_average":
            assert calibrated == pytest.approx((1 - 0.99**k) * peak, rel=1e-5)
            assert agree <= 0.3, "clipped at +-4 % of its range, the input carries almost nothing"
        else:
            assert calibrated == pytest.approx(peak, rel=1e-5) if observer == "global_minmax" else calibrated > 0.9 * peak
            assert agree >= 0.95


@W8A8
def test_w8a8_program_for_real(data, prepared, results, tmp_path):
    x_train, x_test, y_test, keep = data
    name = "W8A8, default config, example = 1st calibration batch"
    row = _row(results, name)
    model, _ = opt.compress(prepared, opt.METHODS[name], x_train[:opt.CALIBRATION_IMAGES])
    path = opt._export_aimodel(model, tmp_path / "w8a8.aimodel", opt.PROGRAM_BATCH, fp16=True)
    labels = opt._run_aimodel(path, x_test[keep], opt.PROGRAM_BATCH, fp16=True).argmax(1)
    assert labels.tolist() == [row["labels"][i] for i in keep.tolist()]
    from ane_vit.export import package_nbytes

    assert abs(package_nbytes(path) - row["bytes"]) <= 1e-3 * row["bytes"]
    assert np.mean(labels.numpy() == y_test[keep].numpy()) >= 0.95

"""ane_vit.analysis: what a converted ML Program contains, and the ANE-readiness rules.

Each test converts a tiny module (about a second each) with ``ane_vit.export.to_mlprogram``
or builds a MIL program directly, and checks the report against numbers derived by hand
from the module's definition.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("coremltools")

from ane_vit import WindowAttention  # noqa: E402
from ane_vit.analysis import (  # noqa: E402
    LARGE_TENSOR_BYTES,
    MAX_AXIS,
    ProgramReport,
    analyze,
    ane_rules,
    main,
    op_histogram,
)
from ane_vit.export import to_mlprogram  # noqa: E402


class TinyConvNet(nn.Module):
    """conv 3->8 (3x3) -> relu -> depthwise conv 8->8 (3x3, groups=8)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        return self.dw(torch.relu(self.conv(x)))


class TableLookup(nn.Module):
    """Rows of a learned table picked by an index that is a model input: a run-time gather."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(10, 16))

    def forward(self, x, idx):
        return x + self.table[idx]


class Relu2(nn.Module):
    def forward(self, a, b):
        return torch.relu(a), torch.relu(b)


class MatMul(nn.Module):
    def forward(self, x, y):
        return torch.matmul(x, y)  # (B, M, K) @ (B, K, N) -> (B, M, N)


class LinearTwice(nn.Module):
    """The same Linear(8, 8) applied twice: its weights are stored once."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(self.lin(x))


class Partition6D(nn.Module):
    """A 6-D window partition of 2x2 windows, as written naively."""

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 2, 2, w // 2, 2)  # (B, C, H, W) -> (B, C, H/2, 2, W/2, 2)
        x = x.permute(0, 1, 3, 5, 2, 4)  # -> (B, C, 2, 2, H/2, W/2)
        return x.reshape(b, c * 4, h // 2, w // 2)  # -> (B, 4C, H/2, W/2)


def rules_fired(report: ProgramReport) -> set[str]:
    return {f.rule for f in report.findings}


@pytest.fixture(scope="module")
def conv_model():
    return to_mlprogram(TinyConvNet(), torch.randn(1, 3, 8, 8))


@pytest.fixture(scope="module")
def attention_model():
    torch.manual_seed(0)
    attn = WindowAttention(dim=32, window_size=(4, 4), num_heads=2, split_head=True, pe_type="SINGLE_HEAD_RPE")
    return to_mlprogram(attn, torch.randn(2, 16, 32))


@pytest.fixture(scope="module")
def saved_attention(attention_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("analysis") / "attention.mlpackage"
    attention_model.save(str(path))
    return path


# ----------------------------------------------------------------- facts about the program


def test_histogram_and_shapes_of_tiny_conv_net(conv_model):
    report = analyze(conv_model)
    assert report.histogram() == {"conv": 2, "relu": 1}
    assert op_histogram(conv_model) == report.histogram()
    for op in report.ops:
        (out,) = op.outputs
        assert out.shape == (1, 8, 8, 8) and out.rank == 4 and out.dtype == "fp16"
    assert report.findings == []  # fixed shape, float16, all ops ANE-friendly, small tensors


def test_padded_bytes_of_each_output(conv_model):
    out = analyze(conv_model).ops[0].outputs[0]  # (1, 8, 8, 8) fp16
    assert out.dense_bytes == 8 * 8 * 8 * 2
    # the last axis (8 x 2 B = 16 B) is padded to 64 B = 32 fp16 elements
    assert out.padded_bytes == 8 * 8 * 32 * 2
    assert out.waste_bytes == 8 * 8 * (32 - 8) * 2
    s = analyze(conv_model).summary()  # three outputs of the same shape
    assert (s["activation_bytes_dense"], s["activation_bytes_padded"]) == (3 * out.dense_bytes, 3 * out.padded_bytes)
    assert s["padding_waste_fraction"] == pytest.approx(24 / 32)


def test_conv_flops_include_depthwise(conv_model):
    flops = {op.op_type + str(i): op.flops for i, op in enumerate(analyze(conv_model).ops)}
    out_elems = 8 * 8 * 8
    assert flops["conv0"] == 2 * out_elems * (3 * 3 * 3)  # C_in * kh * kw MACs per output
    assert flops["relu1"] == 0
    assert flops["conv2"] == 2 * out_elems * (1 * 3 * 3)  # depthwise: C_in/groups = 1


def test_matmul_and_linear_flops_and_weights_counted_once():
    mm = analyze(to_mlprogram(MatMul(), (torch.randn(2, 5, 7), torch.randn(2, 7, 3))))
    assert mm.histogram() == {"matmul": 1}
    assert mm.summary()["flops"] == 2 * (2 * 5 * 3) * 7  # 2 x (output elements x K)

    twice = analyze(to_mlprogram(LinearTwice(), torch.randn(1, 16, 8)))
    assert twice.histogram() == {"linear": 2}
    assert twice.summary()["flops"] == 2 * (2 * 16 * 8 * 8)
    assert twice.weight_bytes == (8 * 8 + 8) * 2  # one fp16 weight + bias, used twice, counted once


def test_window_attention_program(attention_model):
    report = analyze(attention_model)
    h = report.histogram()
    heads, n, c = 2, 16, 32
    # q, k, v and output projections are 1x1 convs; split softmax: one softmax and two
    # einsums per head; the single-head RPE bias is one add per head (its gather is folded)
    assert (h["conv"], h["softmax"], h["einsum"], h["add"]) == (4, heads, 2 * heads, heads)
    assert "gather" not in h
    assert max(t.rank for op in report.ops for t in op.outputs) == 4
    expected = 4 * 2 * (2 * n) * c * c + 2 * heads * 2 * (2 * n * n * (c // heads))
    assert report.summary()["flops"] == expected
    layout = report.layout_ops
    assert {op.op_type for op in layout} <= {"transpose", "split", "expand_dims", "squeeze", "concat"}
    assert report.summary()["layout_bytes_dense"] == sum(op.dense_bytes for op in layout) > 0
    assert report.findings == []


# ----------------------------------------------------------------- readiness rules


def test_rank_above_5_fires_on_a_rank6_program_not_on_window_partition():
    import coremltools as ct
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def rank6(x):
        y = mb.reshape(x=x, shape=[1, 2, 2, 2, 2, 2])  # (1, 4, 8) -> rank 6
        y = mb.mul(x=y, y=np.float16(2.0))
        return mb.reshape(x=y, shape=[1, 4, 8])  # back to (1, 4, 8)

    report = analyze(rank6)
    fired = [f for f in report.findings if f.rule == "rank_above_5"]
    assert [f.op for f in fired] == ["reshape_0", "mul_0"]
    assert fired[0].severity == "error" and "rank 6" in fired[0].message and fired[0].citation

    # A 6-D window partition (reshape + permute) is rewritten by coremltools into rank 5.
    clean = analyze(to_mlprogram(Partition6D(), torch.randn(1, 4, 8, 8)))
    assert "rank_above_5" not in rules_fired(clean)
    assert clean.summary()["max_rank"] == 5


def test_runtime_gather_fires_only_for_a_runtime_index(attention_model):
    report = analyze(to_mlprogram(TableLookup(), (torch.randn(4, 16), torch.tensor([1, 2, 3, 4])), input_names=["x", "idx"]))
    assert report.histogram()["gather"] == 1
    assert {"runtime_gather", "op_not_in_ane_list"} <= rules_fired(report)
    # WindowAttention's RPE gathers its bias from constants: folded at conversion, no finding
    assert "runtime_gather" not in rules_fired(analyze(attention_model))


def test_float32_compute_fires_for_fp32_program_not_for_boundary_casts(conv_model):
    fp32 = analyze(to_mlprogram(TinyConvNet(), torch.randn(1, 3, 8, 8), compute_precision="float32"))
    assert [f.op for f in fp32.findings if f.rule == "float32_compute"] == [op.name for op in fp32.ops]
    assert "float32_compute" not in rules_fired(analyze(conv_model))

    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8), dtype=types.fp32)], opset_version=ct.target.iOS16)
    def casts(x):
        y = mb.cast(x=x, dtype="fp16")  # the model's input cast: exempt
        y = mb.relu(x=y)
        return mb.cast(x=y, dtype="fp32")  # the model's output cast: exempt

    assert analyze(casts).findings == []


def test_flexible_input_shape():
    import coremltools as ct

    traced = torch.jit.trace(nn.ReLU().eval(), torch.randn(1, 4, 8))
    ranged = ct.convert(traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                        inputs=[ct.TensorType(name="x", shape=(1, 4, ct.RangeDim(1, 64, default=8)))])
    (finding,) = analyze(ranged).findings
    assert (finding.rule, finding.severity, finding.op) == ("flexible_input_shape", "warning", "x")
    enumerated = ct.convert(traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                            inputs=[ct.TensorType(name="x", shape=ct.EnumeratedShapes([(1, 4, 8), (1, 4, 16)]))])
    assert [(f.rule, f.severity) for f in analyze(enumerated).findings] == [("flexible_input_shape", "info")]


def test_axis_over_16384():
    report = analyze(to_mlprogram(nn.ReLU(), torch.randn(1, 2, MAX_AXIS + 16)))
    (finding,) = report.findings
    assert finding.rule == "axis_over_16384" and str(MAX_AXIS + 16) in finding.message
    assert analyze(to_mlprogram(nn.ReLU(), torch.randn(1, 2, MAX_AXIS))).findings == []


def test_misaligned_last_axis_only_for_large_tensors():
    # a: last axis 65 fp16 = 130 B -> padded to 192 B: 1.5 MiB buffer, 32% padding  -> fires
    # b: last axis 160 fp16 = 320 B, a multiple of 64 B: 1.25 MiB, no padding      -> clean
    # c: last axis 65 but only 8x8 rows: 24 KiB, under the size threshold          -> clean
    a, b, c = torch.randn(1, 64, 128, 65), torch.randn(1, 64, 64, 160), torch.randn(1, 8, 8, 65)
    report = analyze(to_mlprogram(Relu2(), (a, b)))
    (finding,) = report.findings
    (op_a,) = [op for op in report.ops if op.outputs[0].shape == tuple(a.shape)]
    out = op_a.outputs[0]
    assert (finding.rule, finding.op) == ("misaligned_last_axis", op_a.name)
    assert out.padded_bytes == 64 * 128 * 96 * 2 > LARGE_TENSOR_BYTES
    assert math.isclose(out.waste_bytes / out.padded_bytes, 31 / 96)
    assert analyze(to_mlprogram(Relu2(), (c, c))).findings == []


def test_every_rule_and_op_entry_has_a_source():
    data = ane_rules()
    for entry in data["ane_friendly_ops"] + data["not_ane_friendly_ops"] + data["rules"]:
        assert entry["source"] and all(k in data["sources"] for k in entry["source"]), entry
        assert entry["basis"] in {"documented", "observed", "community", "inference"}, entry
    assert {r["id"] for r in data["rules"]} == {
        "rank_above_5", "runtime_gather", "float32_compute", "flexible_input_shape",
        "axis_over_16384", "misaligned_last_axis", "op_not_in_ane_list",
    }


# ----------------------------------------------------------------- files, JSON, CLI, errors


def test_saved_package_round_trip(attention_model, saved_attention, tmp_path):
    from_model, from_path = analyze(attention_model).to_dict(), analyze(saved_attention).to_dict()
    assert from_path.pop("source") == str(saved_attention)
    from_model.pop("source")
    assert from_path == from_model
    out = tmp_path / "report.json"
    text = analyze(saved_attention).to_json(out)
    assert json.loads(out.read_text()) == json.loads(text)


def test_table_and_dict(attention_model):
    report = analyze(attention_model)
    text = str(report)
    assert text == report.table()
    assert "einsum" in text and "ANE-readiness findings: 0" in text
    assert len(report.table(top=3).splitlines()) == len(report.table(top=5).splitlines()) - 2
    assert json.loads(json.dumps(report.to_dict()))["summary"] == report.summary()


def test_cli_table_and_json(saved_attention):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "ane_vit.analysis", str(saved_attention)]
    # the two runs overlap: each spends most of its time importing coremltools
    runs = [subprocess.Popen(cmd + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for extra in (["--top", "3"], ["--json"])]
    (table, err1), (as_json, err2) = (p.communicate(timeout=300) for p in runs)
    assert [p.returncode for p in runs] == [0, 0], err1 + err2
    assert "op type" in table and "conv" in table and "largest 3 op outputs" in table
    assert json.loads(as_json)["summary"] == analyze(saved_attention).summary()


def test_errors_say_what_was_expected(tmp_path, capsys):
    missing = tmp_path / "missing.mlpackage"
    with pytest.raises(FileNotFoundError, match="no such .mlpackage: .* does not exist"):
        analyze(missing)
    with pytest.raises(TypeError, match="model must be a coremltools MLModel, a MIL Program or a path to an .mlpackage, got int"):
        analyze(3)
    import coremltools as ct

    traced = torch.jit.trace(nn.ReLU().eval(), torch.randn(1, 4, 8))
    nn_model = ct.convert(traced, convert_to="neuralnetwork", inputs=[ct.TensorType(name="x", shape=(1, 4, 8))])
    with pytest.raises(ValueError, match="is a Core ML 'neuralNetwork' model, not an ML Program"):
        analyze(nn_model)
    with pytest.raises(SystemExit) as exit_info:
        main([str(missing)])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------- plots


def test_plots_draw_the_report_numbers(conv_model, attention_model):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ane_vit.analysis.plots import (
        plot_activation_padding,
        plot_findings,
        plot_layout_bytes,
        plot_op_histogram,
    )

    conv, attn = analyze(conv_model), analyze(attention_model)
    ax = plot_op_histogram(conv)
    assert [p.get_width() for p in ax.patches] == [2, 1]
    assert ax.get_title() == "conv is the most common op: 2 of 3"

    reports = {"conv net": conv, "attention": attn}
    ax = plot_activation_padding(reports)
    heights = [p.get_height() for p in ax.patches]
    mb = 1e6
    sums = [conv.summary(), attn.summary()]
    assert heights == pytest.approx([s[k] / mb for k in ("activation_bytes_dense", "activation_bytes_padded_lower",
                                                        "activation_bytes_padded") for s in sums])
    assert "conv net" in ax.get_title()  # 8 fp16 = 16 B last axis: the worst padding (+300%)

    ax = plot_layout_bytes(reports, kinds={"attention": "ane"})
    # bars: moving (conv net, attention), then keeping (conv net, attention); the conv net has no layout ops
    assert [p.get_height() for p in ax.patches][0::2] == [0, 0]
    s = attn.summary()
    assert [p.get_height() for p in ax.patches][1::2] == pytest.approx(
        [s["layout_bytes_moving_width_padded"] / mb, s["layout_bytes_keeping_width_padded"] / mb])
    assert ax.get_title().startswith("attention's layout ops move")
    with pytest.raises(ValueError, match="kinds\\['attention'\\] must be one of"):
        plot_layout_bytes(reports, kinds={"attention": "fast"})

    ax = plot_findings(reports)
    assert ax.get_title() == "No ANE-readiness findings in any program"
    with pytest.raises(TypeError, match="non-empty mapping"):
        plot_findings([conv])
    plt.close("all")

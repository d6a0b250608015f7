"""``analyze`` numbers counted by hand for op settings and dtypes the other tests do not reach.

``tests/test_analysis.py`` covers float16 programs converted from PyTorch, whose matmuls
never transpose their first operand. Here MIL programs are built directly: a matmul with
``transpose_x``/``transpose_y``, and a float32 program, whose padded bytes differ from a
float16 one's (a 64-byte line holds 16 float32 elements, not 32).
"""

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from ane_vit.analysis import analyze  # noqa: E402


def _by_type(report):
    return {op.op_type: op for op in report.ops}


def test_matmul_flops_with_transposed_operands():
    from coremltools.converters.mil import Builder as mb

    # x is stored (B, K, M) = (2, 7, 5) and transposed: (2, 5, 7) @ (2, 7, 3) -> (2, 5, 3)
    # y is stored (B, N, K) = (2, 3, 7) and transposed in the second matmul.
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 7, 5)), mb.TensorSpec(shape=(2, 3, 7))], opset_version=ct.target.iOS16)
    def prog(x, y):
        a = mb.matmul(x=x, y=mb.transpose(x=y, perm=[0, 2, 1]), transpose_x=True)  # (2, 5, 3)
        b = mb.matmul(x=mb.transpose(x=x, perm=[0, 2, 1]), y=y, transpose_y=True)  # (2, 5, 3)
        return a, b

    report = analyze(prog)
    matmuls = [op for op in report.ops if op.op_type == "matmul"]
    assert [op.outputs[0].shape for op in matmuls] == [(2, 5, 3), (2, 5, 3)]
    # each output element sums K = 7 products: 2 x (2 * 5 * 3) x 7 FLOPs per matmul
    assert [op.flops for op in matmuls] == [2 * (2 * 5 * 3) * 7] * 2
    assert report.summary()["flops"] == 2 * 2 * (2 * 5 * 3) * 7  # transposes cost no FLOPs


def test_linear_and_conv_flops_by_hand():
    from coremltools.converters.mil import Builder as mb

    w_lin = np.ones((6, 4), np.float32)
    w_conv = np.ones((8, 2, 3, 1), np.float32)  # 4 groups of 2 input channels, kernel 3x1

    @mb.program(input_specs=[mb.TensorSpec(shape=(3, 5, 4)), mb.TensorSpec(shape=(1, 8, 6, 6))], opset_version=ct.target.iOS16)
    def prog(x, z):
        lin = mb.linear(x=x, weight=w_lin)  # (3, 5, 6)
        conv = mb.conv(x=z, weight=w_conv, groups=4, strides=[2, 1], pad_type="valid")  # (1, 8, 2, 6)
        return lin, conv

    ops = _by_type(analyze(prog))
    assert ops["linear"].flops == 2 * (3 * 5 * 6) * 4  # D_in = 4 MACs per output element
    assert ops["conv"].outputs[0].shape == (1, 8, 2, 6)
    assert ops["conv"].flops == 2 * (8 * 2 * 6) * (2 * 3 * 1)  # C_in / groups x kh x kw MACs


def test_float32_program_bytes_by_hand():
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 6, 20))], opset_version=ct.target.iOS16)
    def prog(x):
        y = mb.relu(x=x)  # (1, 4, 6, 20) fp32
        return y, mb.reduce_argmax(x=y, axis=-1)  # (1, 4, 6) int32

    report = analyze(prog)
    ops = _by_type(report)
    out = ops["relu"].outputs[0]
    assert (out.shape, out.dtype) == ((1, 4, 6, 20), "fp32")
    rows = 4 * 6
    assert out.dense_bytes == rows * 20 * 4  # 80 B per row
    # 80 B per row, padded to the next multiple of 64 B: 128 B (32 fp32 elements)
    assert out.padded_bytes == rows * 128
    idx = ops["reduce_argmax"].outputs[0]
    assert (idx.shape, idx.dtype) == ((1, 4, 6), "int32")
    assert (idx.dense_bytes, idx.padded_bytes) == (4 * 6 * 4, 4 * 64)  # 24 B per row -> one 64 B line
    s = report.summary()
    assert (s["activation_bytes_dense"], s["activation_bytes_padded"]) == (rows * 80 + 96, rows * 128 + 256)
    assert s["padding_waste_bytes"] == rows * 48 + 160


def test_float32_weights_counted_at_4_bytes():
    from coremltools.converters.mil import Builder as mb

    w = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    b = np.arange(6, dtype=np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(3, 4))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.linear(x=x, weight=w, bias=b)

    report = analyze(prog)
    assert report.weight_bytes == (6 * 4 + 6) * 4
    assert report.n_weights == 2


def test_misaligned_last_axis_is_a_share_of_the_padded_buffer():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    # last axis 25 fp16 = 50 B, padded to 64 B: 14 B of 64 (22 %) is padding, under the
    # 25 % threshold, although it is 28 % of the 50 dense bytes; 20480 rows make 1.25 MiB.
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64, 320, 25), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.relu(x=x)

    report = analyze(prog)
    (out,) = report.ops[0].outputs
    assert out.padded_bytes == 64 * 320 * 64 > (1 << 20)
    assert out.waste_bytes == 64 * 320 * 14
    assert report.findings == []


def test_casts_at_the_program_boundary_are_not_float32_compute():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    # a float16 input cast up to float32 (boundary), float32 compute (flagged), cast back
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(x):
        y = mb.cast(x=x, dtype="fp32", name="to_fp32")
        y = mb.relu(x=y, name="relu_fp32")
        return mb.cast(x=y, dtype="fp16", name="to_fp16")

    fired = [f.op for f in analyze(prog).findings if f.rule == "float32_compute"]
    assert fired == ["relu_fp32"]

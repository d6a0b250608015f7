"""The numpy interpreter of ML Programs: op semantics, float16 arithmetic, whole models.

Small modules are converted with ``ane_vit.export.to_mlprogram``; most op checks convert in
float32 so that a wrong semantic (axis, padding, groups, equation) shows up as a large error
rather than hiding in float16 noise. Programs built directly with the MIL builder cover op
settings that PyTorch does not produce (gelu modes, concat interleave, pad types).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from torch import nn

ct = pytest.importorskip("coremltools")

from ane_vit import PEType, WindowAttention  # noqa: E402
from ane_vit.export import to_mlprogram  # noqa: E402
from ane_vit.interpret import (  # noqa: E402
    SUPPORTED_OPS,
    UnsupportedOpError,
    load_program,
    program_parity,
    run_program,
    unsupported_ops,
)
from ane_vit.testing import assert_parity  # noqa: E402


def _run_fp32(module: nn.Module, *xs: torch.Tensor):
    """Convert in float32, interpret, and return (torch outputs, program outputs)."""
    model = to_mlprogram(module, xs, compute_precision="float32")
    names = list(load_program(model).functions["main"].inputs)
    outs = list(run_program(model, dict(zip(names, [x.numpy() for x in xs]))).values())
    with torch.no_grad():
        ref = module.eval()(*xs)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    return ref, outs


def _op_types(model) -> set[str]:
    return {op.op_type for op in load_program(model).functions["main"].operations}


# --- per-op checks on small converted modules -------------------------------------------


class _Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.strided_grouped = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=2)
        self.depthwise = nn.Conv2d(12, 12, 5, padding=2, groups=12)
        self.depthwise_mult = nn.Conv2d(12, 24, 3, padding=1, groups=12, bias=False)
        self.dilated_rect = nn.Conv2d(24, 8, (3, 1), padding=(2, 0), dilation=(2, 1))
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.strided_valid = nn.Conv2d(16, 4, 2, stride=2)

    def forward(self, x):
        y = self.strided_grouped(x)  # (1, 12, 6, 7)
        y = self.depthwise_mult(self.depthwise(y))  # (1, 24, 6, 7)
        y = self.pointwise(self.dilated_rect(y))  # (1, 16, 6, 7)
        return self.strided_valid(y)  # (1, 4, 3, 3)


def test_conv_groups_stride_padding_dilation():
    module = _Convs()
    x = torch.randn(1, 8, 11, 13)
    ref, (out,) = _run_fp32(module, x)
    assert out.shape == (1, 4, 3, 3) and out.dtype == np.float32
    report = assert_parity(ref[0], out, atol=1e-4, min_psnr=100)
    assert report.max_abs < 1e-4


def test_einsum_forms_of_window_attention():
    class _Einsums(nn.Module):
        def forward(self, q, k):  # q: (B, C, 1, N), k: (B, N, 1, C) as in split-head attention
            s = torch.einsum("bchq,bkhc->bkhq", q, k)  # (B, N_k, 1, N_q)
            o = torch.einsum("bkhq,bchk->bchq", s, q)  # (B, C, 1, N_q)
            q4, k4 = q.reshape(2, 2, 3, 10), k.permute(0, 3, 2, 1).reshape(2, 2, 3, 10)  # (B, h, d, N)
            f = torch.einsum("bhdq,bhdk->bhkq", q4, k4)  # (B, h, N_k, N_q)
            g = torch.einsum("bhkq,bhdk->bhdq", f, k4)  # (B, h, d, N_q)
            return s, o, f, g

    ref, outs = _run_fp32(_Einsums(), torch.randn(2, 6, 1, 10), torch.randn(2, 10, 1, 6))
    assert [o.shape for o in outs] == [(2, 10, 1, 10), (2, 6, 1, 10), (2, 2, 10, 10), (2, 2, 3, 10)]
    assert_parity(ref, outs, atol=1e-4, min_psnr=100)


def test_softmax_axes_layer_norm_split_concat():
    class _Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(7)
            self.ln2 = nn.LayerNorm((5, 7))
            for p in self.parameters():
                nn.init.normal_(p)

        def forward(self, x):  # (2, 6, 5, 7)
            a, b, c = x.split([1, 2, 3], dim=1)  # uneven split on the channel axis
            cat = torch.cat([c, a, b], dim=1)  # (2, 6, 5, 7), reordered
            return x.softmax(dim=1), x.softmax(dim=-1), self.ln(x), self.ln2(x), cat * 2.0

    x = torch.randn(2, 6, 5, 7) * 3
    ref, outs = _run_fp32(_Mixed(), x)
    assert all(o.shape == (2, 6, 5, 7) for o in outs)
    assert_parity(ref, outs, atol=1e-4, min_psnr=100)


@pytest.mark.parametrize("pe_type", [PEType.LePE_ADD, PEType.RPE])
@pytest.mark.parametrize("split_head", [True, False])
def test_window_attention_program_matches_torch(pe_type, split_head):
    module = WindowAttention(32, (4, 4), 2, split_head=split_head, pe_type=pe_type)
    for p in module.parameters():  # non-zero position terms, so they are really checked
        nn.init.normal_(p, std=0.2)
    ref, (out,) = _run_fp32(module, torch.randn(2, 16, 32))
    assert_parity(ref[0], out, atol=1e-4, min_psnr=100)


def test_window_attention_float16_program_parity():
    module = WindowAttention(32, (4, 4), 2, split_head=True, pe_type=PEType.SINGLE_HEAD_RPE)
    for p in module.parameters():
        nn.init.normal_(p, std=0.2)
    model = to_mlprogram(module, torch.randn(2, 16, 32))  # float16
    report = program_parity(module, torch.randn(2, 16, 32), model=model)
    assert 60 <= report.psnr_db < 120, report  # float16 rounding: close, but not exact
    (out,) = run_program(model, {"x": torch.randn(2, 16, 32)}).values()
    assert out.dtype == np.float16


def test_float16_arithmetic_really_happens():
    class _Shift(nn.Module):
        def forward(self, x):
            return (x + 1024.0) - 1024.0  # float16 spacing is 0.5 in [512, 1024), 1 in [1024, 2048)

    x = torch.randn(1, 3, 4, 4) * 4
    model = to_mlprogram(_Shift(), x)  # float16
    out = run_program(model, {"x": x.numpy()})
    (y,) = out.values()
    assert y.dtype == np.float16
    h = x.numpy().astype(np.float16)
    expected = (h + np.float16(1024.0)) - np.float16(1024.0)  # numpy float16 arithmetic
    np.testing.assert_array_equal(y, expected)
    assert np.abs(y.astype(np.float32) - x.numpy()).max() > 0.1  # float32 would keep x
    assert np.array_equal(2 * y, np.round(2 * y))  # x rounded to the float16 grid near 1024

    # iOS15 programs take and return float32: cast ops mark the float16 region.
    model15 = to_mlprogram(_Shift(), x, minimum_deployment_target="iOS15")
    assert "cast" in _op_types(model15)
    (y15,) = run_program(model15, {"x": x.numpy()}).values()
    assert y15.dtype == np.float32
    np.testing.assert_array_equal(y15, expected.astype(np.float32))


# --- op settings PyTorch does not produce, via the MIL builder ----------------------------


def _mil(fn, *shapes):
    from coremltools.converters.mil import Builder as mb

    specs = [mb.TensorSpec(shape=s) for s in shapes]
    return mb.program(input_specs=specs, opset_version=ct.target.iOS16)(fn)


def test_gelu_modes_concat_interleave_pool_padding():
    from coremltools.converters.mil import Builder as mb

    def prog(x):
        return (
            mb.gelu(x=x, mode="EXACT"),
            mb.gelu(x=x, mode="TANH_APPROXIMATION"),
            mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
            mb.concat(values=[x, mb.mul(x=x, y=-1.0)], axis=1, interleave=True),
            mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="same", exclude_padding_from_average=True),
            mb.max_pool(x=x, kernel_sizes=[2, 3], strides=[1, 2], pad_type="valid"),
            mb.rsqrt(x=mb.abs(x=x), epsilon=0.5),
            mb.conv(x=x, weight=w, pad_type="custom", pad=[0, 1, 2, 0], groups=1),
            mb.conv(x=x, weight=w, strides=[2, 2], pad_type="same_lower"),
        )

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 2, 3)).astype(np.float32)
    outs = list(run_program(_mil(prog, x.shape), {"x": x}).values())
    t = torch.from_numpy(x)
    import torch.nn.functional as F

    interleaved = np.stack([x, -x], axis=2).reshape(1, 6, 5, 6)  # channels x0, -x0, x1, -x1, ...
    # 'same' for 5x6, k=3, s=2: 3x3 outputs; rows padded (1, 1), columns (0, 1) (extra after)
    pad = (0, 1, 1, 1)  # F.pad order: (left, right, top, bottom)
    avg = F.avg_pool2d(F.pad(t, pad), 3, 2) / F.avg_pool2d(F.pad(torch.ones_like(t), pad), 3, 2)
    expected = [
        F.gelu(t), F.gelu(t, approximate="tanh"), t * torch.sigmoid(1.702 * t),
        interleaved, avg, F.max_pool2d(t, (2, 3), (1, 2)), 1 / torch.sqrt(t.abs() + 0.5),
        F.conv2d(F.pad(t, (2, 0, 0, 1)), torch.from_numpy(w)),  # pad: top 0, bottom 1, left 2, right 0
        # same_lower, k=(2, 3), s=2 on 5x6: rows need 1 (before), columns 1 (before)
        F.conv2d(F.pad(t, (1, 0, 1, 0)), torch.from_numpy(w), stride=2),
    ]
    for i, (e, o) in enumerate(zip(expected, outs)):
        assert_parity(np.asarray(e), o, atol=1e-5, name=f"output {i}")


def test_unsupported_ops_are_all_named_before_running():
    from coremltools.converters.mil import Builder as mb

    def prog(x):
        y = mb.cumsum(x=x, axis=0)
        return mb.argsort(x=mb.relu(x=y), axis=-1)

    program = _mil(prog, (2, 3))
    assert unsupported_ops(program) == ["argsort", "cumsum"]
    with pytest.raises(UnsupportedOpError, match="argsort, cumsum") as info:
        run_program(program, {"x": np.zeros((2, 3), np.float32)})
    assert info.value.op_types == ("argsort", "cumsum")
    assert isinstance(info.value, ValueError)
    assert "relu" in SUPPORTED_OPS and "cumsum" not in SUPPORTED_OPS


def test_input_checks_and_saved_package(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU())
    x = torch.randn(1, 3, 6, 6)
    model = to_mlprogram(module, x)
    with pytest.raises(ValueError, match=r"inputs must be exactly \['x'\]"):
        run_program(model, {"image": x.numpy()})
    with pytest.raises(ValueError, match=r"must have shape \(1, 3, 6, 6\), got \(1, 3, 5, 6\)"):
        run_program(model, {"x": x.numpy()[:, :, :5]})
    path = tmp_path / "tiny.mlpackage"
    model.save(str(path))
    in_memory = run_program(model, {"x": x})
    from_disk = run_program(path, {"x": x})  # program rebuilt from the saved spec + weights
    assert list(in_memory) == list(from_disk)
    for name in in_memory:
        np.testing.assert_array_equal(in_memory[name], from_disk[name])
    with pytest.raises(ValueError, match="no such .mlpackage"):
        run_program(tmp_path / "missing.mlpackage", {"x": x})


# --- whole models (the acceptance test of issue 5) ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("attention_mode", "pe_type"), [("global", "LePE_ADD"), ("local", "SINGLE_HEAD_RPE")]
)
def test_tiny_moat_0_program_parity(attention_mode, pe_type):
    moat = pytest.importorskip("ane_vit.moat")
    _, model = moat.build_model((1, 3, 256, 256), "tiny-moat-0", attention_mode=attention_mode, pe_type=pe_type)
    model.eval()
    x = torch.randn(1, 3, 256, 256)
    mlmodel = to_mlprogram(model, x)  # float16
    assert unsupported_ops(mlmodel) == []
    reports = program_parity(model, x, model=mlmodel, min_psnr=60, per_output=True)
    assert len(reports) == 4  # the four stage outputs
    assert all(r.psnr_db >= 60 for r in reports.values()), reports


@pytest.mark.slow
def test_deit_program_parity():
    deit = pytest.importorskip("ane_vit.deit")
    # DeiT-Tiny's layers at 224x224, 2 blocks instead of 12 to keep the conversion short.
    config = dataclasses.replace(deit.DEIT_TINY, depth=2)
    model = deit.build_deit(config, image_size=224)
    x = torch.randn(1, 3, 224, 224)
    mlmodel = to_mlprogram(model, x)
    assert {"layer_norm", "gelu", "einsum", "softmax", "conv"} <= _op_types(mlmodel)
    report = program_parity(model, x, model=mlmodel, min_psnr=60)
    assert report.psnr_db >= 60, report


# --- bad input: large values, settings found before running, files that are not programs --


def _reduction_reference(op: str, x: np.ndarray) -> np.ndarray:
    """The op's definition over the last axis, in float64."""
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    if op == "softmax":
        e = np.exp(x - m)
        return e / e.sum(axis=-1, keepdims=True)
    if op == "layer_norm":
        c = x - x.mean(axis=-1, keepdims=True)
        return c / np.sqrt((c**2).mean(axis=-1, keepdims=True) + 1e-5)
    return {
        "reduce_log_sum_exp": lambda: np.log(np.exp(x - m).sum(axis=-1)) + m[..., 0],
        "reduce_log_sum": lambda: np.log(x.sum(axis=-1)),
        "reduce_sum_square": lambda: (x**2).sum(axis=-1),
        "reduce_l2_norm": lambda: np.sqrt((x**2).sum(axis=-1)),
        "reduce_l1_norm": lambda: np.abs(x).sum(axis=-1),
        "reduce_mean": lambda: x.mean(axis=-1),
        "reduce_sum": lambda: x.sum(axis=-1),
    }[op]()


_LARGE = {
    np.float16: [[100, 99, 98], [60000, 30000, 40000], [65504, 65504, 65504], [11, 10, 12]],
    np.float32: [[100, 99, 98], [1000, 999, 998], [1e20, 2e20, 3e20], [3e38, 3e38, 1e38], [1e-30, 2e-30, 3e-30]],
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize(
    "op",
    ["softmax", "reduce_log_sum_exp", "reduce_log_sum", "reduce_sum_square", "reduce_l2_norm",
     "reduce_l1_norm", "reduce_mean", "reduce_sum", "layer_norm"],
)
def test_reductions_and_softmax_with_large_inputs(op, dtype):
    # Each program computes in its own dtype; the definition is evaluated in float64 and
    # rounded once to that dtype. A result past the dtype's range is inf on both sides
    # (sum of squares of 60000s in float16); a finite one must not overflow on the way.
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    for row in _LARGE[dtype]:
        x = np.array([row], dtype)

        def prog(x):
            if op == "softmax":
                return mb.softmax(x=x, axis=-1)
            if op == "layer_norm":
                return mb.layer_norm(x=x, axes=[-1], epsilon=dtype(1e-5))
            return getattr(mb, op)(x=x, axes=[-1], keep_dims=False)

        spec = [mb.TensorSpec(shape=x.shape, dtype=types.fp16 if dtype == np.float16 else types.fp32)]
        (out,) = run_program(mb.program(input_specs=spec, opset_version=ct.target.iOS16)(prog), {"x": x}).values()
        with np.errstate(over="ignore"):
            expected = _reduction_reference(op, x).astype(dtype)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, expected, rtol=1e-3 if dtype == np.float16 else 1e-6, err_msg=f"{op} of {row}")


def test_log_sum_exp_of_the_issue():
    from coremltools.converters.mil import Builder as mb

    program = _mil(lambda x: mb.reduce_log_sum_exp(x=x, axes=[1]), (1, 3))
    (out,) = run_program(program, {"x": np.array([[100, 99, 98]], np.float32)}).values()
    assert out.shape == (1,) and round(float(out[0]), 2) == 100.41  # was inf


def test_unsupported_settings_are_named_before_running(monkeypatch):
    from coremltools.converters.mil import Builder as mb

    def prog(x):
        up = mb.upsample_nearest_neighbor(x=mb.relu(x=x), scale_factor_height=1.5, scale_factor_width=2.0)
        rows = mb.reshape(x=x, shape=[2, 16])
        picked = mb.gather(x=rows, indices=np.array([[0, 1], [1, 0]], np.int32), axis=1, batch_dims=1)
        pooled = mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="valid", ceil_mode=True)
        return up, picked, pooled

    program = _mil(prog, (1, 2, 4, 4))
    ran = []
    from ane_vit.interpret import op_table

    monkeypatch.setitem(op_table._OPS, "relu", lambda a: ran.append("relu") or np.maximum(a["x"], 0))
    message = (
        "the ML Program uses 3 op type(s) or op setting(s) that ane_vit.interpret does not support: "
        "gather(batch_dims=1), max_pool(ceil_mode=True), upsample_nearest_neighbor(scale_factor_height=1.5) "
        "(see ane_vit.interpret.SUPPORTED_OPS)"
    )
    with pytest.raises(UnsupportedOpError, match="^" + re.escape(message) + "$"):
        run_program(program, {"x": np.zeros((1, 2, 4, 4), np.float32)})
    assert ran == []  # nothing ran before the error (was: a RuntimeError from the op, mid-run)

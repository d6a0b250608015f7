"""Numerical checks used by the tests and the notebooks: shapes, max abs error, PSNR."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

__all__ = [
    "check_shape",
    "max_abs_error",
    "psnr",
    "assert_parity",
    "ParityReport",
    "randomize_",
    "Float16Overflow",
    "float16_storage_forward",
]


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def check_shape(x, expected: Sequence[int | None], name: str = "tensor") -> None:
    """Raise ``AssertionError`` unless ``x.shape`` matches ``expected`` (None = any size)."""
    shape = tuple(x.shape)
    expected = tuple(expected)
    ok = len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))
    if not ok:
        raise AssertionError(f"{name} has shape {shape}, expected {expected}")


def max_abs_error(reference, test) -> float:
    """Largest absolute difference between two arrays of the same shape."""
    r, t = _as_numpy(reference), _as_numpy(test)
    if r.shape != t.shape:
        raise ValueError(f"shapes differ: reference {r.shape} vs test {t.shape}")
    return float(np.max(np.abs(r - t))) if r.size else 0.0


def psnr(reference, test) -> float:
    """Peak signal-to-noise ratio in dB, the peak being ``max |reference|``.

    ``inf`` when the arrays are identical. 60 dB means the error is 1/1000 of the peak.
    """
    r, t = _as_numpy(reference), _as_numpy(test)
    if r.shape != t.shape:
        raise ValueError(f"shapes differ: reference {r.shape} vs test {t.shape}")
    mse = float(np.mean((r - t) ** 2))
    if not math.isfinite(mse):
        return float("-inf")
    if mse == 0.0:
        return float("inf")
    peak = float(np.max(np.abs(r)))
    if peak == 0.0:
        return float("-inf")
    return 20.0 * math.log10(peak / math.sqrt(mse))


class ParityReport(tuple):
    """``(max_abs_error, psnr_db)`` with names."""

    __slots__ = ()

    def __new__(cls, max_abs: float, psnr_db: float):
        return super().__new__(cls, (max_abs, psnr_db))

    @property
    def max_abs(self) -> float:
        return self[0]

    @property
    def psnr_db(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        return f"ParityReport(max_abs={self.max_abs:.3g}, psnr_db={self.psnr_db:.1f})"


def _check_finite(x: np.ndarray, side: str, name: str) -> None:
    """Raise ``AssertionError`` saying where, if ``x`` holds a NaN or an infinity."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: the {side} has {int(bad.sum())} non-finite value(s) "
            f"({int(np.isnan(x).sum())} NaN, {int(np.isinf(x).sum())} inf); the first is {x[first]} at index {first}"
        )


def assert_parity(reference, test, atol: float | None = None, min_psnr: float | None = None, name: str = "output") -> ParityReport:
    """Check ``test`` against ``reference``; return the measured ``ParityReport``.

    Raises ``AssertionError`` naming the measured and required values when ``atol`` (max
    abs error) or ``min_psnr`` (dB) is not met, and, whatever the thresholds, when the
    reference or the test holds a NaN or an infinity (naming which side, how many and the
    index of the first). Sequences of tensors are checked pairwise,
    and the worst figures are returned.
    """
    if isinstance(reference, (list, tuple)):
        if not isinstance(test, (list, tuple)) or len(test) != len(reference):
            raise AssertionError(f"{name}: expected {len(reference)} outputs, got {len(test) if isinstance(test, (list, tuple)) else type(test).__name__}")
        reports = [assert_parity(r, t, atol, min_psnr, f"{name}[{i}]") for i, (r, t) in enumerate(zip(reference, test))]
        return ParityReport(max(r.max_abs for r in reports), min(r.psnr_db for r in reports))
    check_shape(test, tuple(reference.shape), name)
    r, t = _as_numpy(reference), _as_numpy(test)
    _check_finite(r, "reference", name)  # NaN would compare False with every threshold
    _check_finite(t, "test", name)
    report = ParityReport(max_abs_error(r, t), psnr(r, t))
    if atol is not None and not report.max_abs <= atol:
        raise AssertionError(f"{name}: max abs error {report.max_abs:.3g} > allowed {atol:.3g}")
    if min_psnr is not None and not report.psnr_db >= min_psnr:
        raise AssertionError(f"{name}: PSNR {report.psnr_db:.1f} dB < required {min_psnr:.1f} dB")
    return report


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and norm statistic random, trained-looking values, in place.

    Freshly built layers hold zeros and ones (biases, ``abs_pe``, batch-norm statistics)
    that hide porting and layout mistakes; a parity test on such a model may pass when it
    should fail. Weights are drawn with std ``1/sqrt(fan_in)``, vectors with std 0.1,
    batch-norm running means around 0 and variances in [0.5, 1.5), and norm scales around
    1. Returns ``module``.
    """
    from torch import nn

    from .norm import LayerNormANE

    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        fan_in = p[0].numel() if p.dim() == 4 else p.shape[-1]  # conv: C_in*k*k; else the last axis
        p.copy_(torch.randn(p.shape, generator=g) * (fan_in**-0.5 if p.dim() > 1 else 0.1))
    for mod in module.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
            mod.running_mean.copy_(0.1 * torch.randn(mod.num_features, generator=g))
            mod.running_var.copy_(0.5 + torch.rand(mod.num_features, generator=g))
        if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, LayerNormANE)) and getattr(mod, "weight", None) is not None:
            mod.weight.add_(1.0)  # scales around 1, as after training
    return module


# --------------------------------------------------------------------------- float16 storage

_FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class Float16Overflow:
    """One op whose float32 result held finite values beyond float16's range (+-65504)."""

    op: str
    count: int
    max_abs: float


def _round_to_float16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(t.dtype)


class _Float16Storage(TorchFunctionMode):
    """Round the floating-point result of every torch function to float16, record overflows.

    Inside the handler the mode is off, so ``.to()`` here is not intercepted. Views
    (``reshape``, ``permute``...) are left alone: they alias a result that is rounded already.
    """

    def __init__(self):
        super().__init__()
        self.overflows: list[Float16Overflow] = []

    def _round(self, func, value):
        if isinstance(value, (list, tuple)):
            return type(value)(self._round(func, v) for v in value)
        if not isinstance(value, torch.Tensor) or value.dtype not in (torch.float32, torch.float64) or value._is_view():
            return value
        half = value.to(torch.float16)
        if torch.isinf(half).any():  # checked on the float16 copy: half the bytes to read
            overflow = torch.isinf(half) & torch.isfinite(value)
            if overflow.any():
                name = getattr(func, "__name__", str(func))
                self.overflows.append(Float16Overflow(name, int(overflow.sum()), float(value[overflow].abs().max())))
        return half.to(value.dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self._round(func, func(*args, **(kwargs or {})))


@torch.no_grad()
def float16_storage_forward(module: torch.nn.Module, *inputs: torch.Tensor):
    """Run ``module`` in float32 as a float16 device would *store* its values.

    The parameters and buffers are rounded to float16 values, in place (what
    ``module.half()`` stores; the module stays float32), the inputs are rounded, and the
    floating-point result of every torch function called during the forward pass (each
    conv, einsum, softmax, add, mean...) is rounded to float16 before the next op reads it.
    Arithmetic inside an op stays float32, which is also how a float16 CPU kernel or
    ``ane_vit.interpret`` accumulates. A result beyond +-65504 becomes ``inf`` exactly as
    in float16, and is recorded, so an overflow is caught even where a later op (a sigmoid,
    a softmax) would hide it from the output.

    Why: on CPUs without native float16 arithmetic PyTorch's float16 kernels are very slow
    (a conv about 170x slower than in float32 on an AMD EPYC without AVX-512 FP16), so
    ``module.half()`` of a large model takes many minutes; this costs about one float32
    forward pass. It checks range and rounding, not a device's exact float16 arithmetic.

    Returns:
        ``(outputs, overflows)``: the module's outputs (float32 tensors holding float16
        values) and a list of ``Float16Overflow`` (empty when every value fitted).

    Shapes: as the module's.
    """
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            t.copy_(_round_to_float16(t))
    inputs = tuple(_round_to_float16(x) if x.is_floating_point() else x for x in inputs)
    mode = _Float16Storage()
    with mode:
        outputs = module(*inputs)
    return outputs, mode.overflows

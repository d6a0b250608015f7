"""Numpy implementations of the MIL compute ops that ``ane_vit.interpret`` runs.

Holds the op-call convention shared by every op implementation (``_Args`` and the small
value helpers) and the ops that compute: convolution, pooling, reductions, softmax, the
normalisations, activations and the contractions (``matmul``, ``linear``, ``einsum``). The
layout ops are in ``ane_vit.interpret.layout_ops``; the op-type table in ``ane_vit.interpret.op_table``.
The precision rules (compute in float32, round at the op's output) are described in
``ane_vit.interpret``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# ---------------------------------------------------------------------------------------
# Helpers


@dataclass
class _Args:
    """The evaluated inputs of one op, by name; absent optional inputs read as None."""

    op: object
    values: dict

    def __getitem__(self, name: str):
        return self.values[name]

    def get(self, name: str, default=None):
        value = self.values.get(name)
        return default if value is None else value


def _f32(x: np.ndarray) -> np.ndarray:
    """Float16 to float32 for computing inside an op (float32/ints are returned as is)."""
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _ints(x) -> list[int]:
    return [int(v) for v in np.asarray(x).reshape(-1)]


def _axes(x, rank: int) -> tuple[int, ...]:
    return tuple(sorted(a % rank for a in _ints(x)))


def _out_shape(op, i: int = 0) -> tuple[int, ...] | None:
    shape = op.outputs[i].shape
    try:
        return tuple(int(s) for s in shape)
    except TypeError:  # symbolic (flexible) dimension
        return None


#: Settings the conv/pool and gelu implementations understand (checked before a run).
_PAD_TYPES = ("valid", "same", "same_lower", "custom")
_GELU_MODES = ("EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION")


def _spatial_pads(pad_type: str, pad, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis, as MIL's conv/pool ``pad_type`` defines it."""
    pad_type = str(pad_type).lower()
    n = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        p = _ints(pad)
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            eff = (k - 1) * d + 1
            total = max(0, (-(-size // s) - 1) * s + eff - size)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if pad_type == "same" else (large, small))
        return pads
    raise ValueError(f"unknown pad_type {pad_type!r}; expected valid, same, same_lower or custom")


def _windows(xp: np.ndarray, kernel, strides, dilations, out_sizes) -> np.ndarray:
    """Strided view of the kernel windows of a padded (B, C, *spatial) array.

    Shapes: ``xp: (B, C, *S_pad) -> (B, C, *S_out, *kernel)`` (a view, no copy)
    """
    n = len(kernel)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    view = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + n)))
    view = view[(Ellipsis, *[slice(None, None, d) for d in dilations])]  # dilated taps
    view = view[(slice(None), slice(None), *[slice(None, o * s, s) for o, s in zip(out_sizes, strides)])]
    return view


# ---------------------------------------------------------------------------------------
# Op implementations. Each takes the evaluated inputs and returns an array (or a list of
# arrays for multi-output ops); the runner casts the result to the output var's dtype.


def _conv(a: _Args) -> np.ndarray:
    x, w = _f32(a["x"]), _f32(a["weight"])
    n = x.ndim - 2  # spatial axes
    kernel = w.shape[2:]
    strides = _ints(a.get("strides", [1] * n))
    dilations = _ints(a.get("dilations", [1] * n))
    groups = int(a.get("groups", 1))
    pads = _spatial_pads(a.get("pad_type", "valid"), a.get("pad"), x.shape[2:], kernel, strides, dilations)
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, [(0, 0), (0, 0), *pads])
    out_sizes = [
        (x.shape[2 + i] - ((kernel[i] - 1) * dilations[i] + 1)) // strides[i] + 1 for i in range(n)
    ]
    b, cin = x.shape[:2]
    cout, cin_g = w.shape[:2]
    if groups == 1 and all(k == 1 for k in kernel) and all(s == 1 for s in strides):
        y = np.matmul(w.reshape(cout, cin), x.reshape(b, cin, -1))  # (B, Cout, S): 1x1 conv
    elif cin_g == 1 and groups == cin:  # depthwise: one multiply-add per kernel tap
        mult = cout // cin
        xr = np.repeat(x, mult, axis=1) if mult > 1 else x  # (B, Cout, *S_pad)
        y = np.zeros((b, cout, *out_sizes), np.float32)
        for tap in np.ndindex(*kernel):
            sl = tuple(
                slice(t * d, t * d + (o - 1) * s + 1, s)
                for t, d, o, s in zip(tap, dilations, out_sizes, strides)
            )
            wt = w[(slice(None), 0, *tap)].reshape(1, cout, *[1] * n)  # (1, Cout, 1, ...)
            y += xr[(slice(None), slice(None), *sl)] * wt
    else:
        win = _windows(x, kernel, strides, dilations, out_sizes)  # (B, Cin, *S_out, *K)
        cout_g = cout // groups
        spatial = "hwd"[:n]
        taps = "ijk"[:n]
        outs = []
        for g in range(groups):
            wg = w[g * cout_g : (g + 1) * cout_g]  # (Cout/g, Cin/g, *K)
            xg = win[:, g * cin_g : (g + 1) * cin_g]  # (B, Cin/g, *S_out, *K)
            outs.append(np.einsum(f"bc{spatial}{taps},oc{taps}->bo{spatial}", xg, wg, optimize=True))
        y = np.concatenate(outs, axis=1)  # (B, Cout, *S_out)
    y = y.reshape(b, cout, *out_sizes)  # (B, Cout, *S_out)
    if a.get("bias") is not None:
        y = y + _f32(a["bias"]).reshape(1, cout, *[1] * n)
    return y


def _pool(a: _Args, kind: str) -> np.ndarray:
    x = _f32(a["x"])
    n = x.ndim - 2
    kernel = _ints(a["kernel_sizes"])
    strides = _ints(a.get("strides", [1] * n))
    ones = [1] * n
    pads = _spatial_pads(a.get("pad_type", "valid"), a.get("pad"), x.shape[2:], kernel, strides, ones)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    out_sizes = [(xp.shape[2 + i] - kernel[i]) // strides[i] + 1 for i in range(n)]
    win = _windows(xp, kernel, strides, ones, out_sizes)  # (B, C, *S_out, *K)
    red = tuple(range(2 + n, 2 + 2 * n))
    if kind == "max":
        return win.max(axis=red)
    total = win.sum(axis=red, dtype=np.float32)
    if bool(a.get("exclude_padding_from_average", False)):
        mask = np.pad(np.ones((1, 1, *x.shape[2:]), np.float32), [(0, 0), (0, 0), *pads])
        count = _windows(mask, kernel, strides, ones, out_sizes).sum(axis=red)  # (1, 1, *S_out)
        return total / count
    return total / float(np.prod(kernel))


def _reduce(fn: Callable) -> Callable:
    def run(a: _Args) -> np.ndarray:
        x = _f32(a["x"])
        axes = a.get("axes")
        axes = tuple(range(x.ndim)) if axes is None else _axes(axes, x.ndim)
        return fn(x, axes, bool(a.get("keep_dims", False)))

    return run


def _reduce_arg(fn: Callable) -> Callable:
    def run(a: _Args) -> np.ndarray:
        x = _f32(a["x"])
        axis = int(a.get("axis", -1)) % x.ndim
        y = fn(x, axis=axis)
        return np.expand_dims(y, axis) if bool(a.get("keep_dims", False)) else y

    return run


# Reductions that could overflow float32 on the way to a representable result: the exp of a
# large input, or the square or sum of inputs near float32's limit. Each computes the
# direct formula and, only where that is not finite for finite inputs, redoes it on the
# input divided by its largest magnitude (``s``) and puts the scale back; the log-sum-exp
# always subtracts the maximum, as softmax does.


def _max_abs(x: np.ndarray, axes, keepdims: bool = True) -> np.ndarray:
    s = np.max(np.abs(x), axis=axes, keepdims=keepdims)
    return np.where((s > 0) & np.isfinite(s), s, 1.0).astype(x.dtype)  # 1: leave zeros and infs as they are


def _overflowed(result: np.ndarray, x: np.ndarray) -> bool:
    return not np.all(np.isfinite(result)) and bool(np.all(np.isfinite(x)))


def _log_sum_exp(x: np.ndarray, axes, keep: bool) -> np.ndarray:
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype)  # all -inf (or an inf): no shift
    out = m + np.log(np.exp(x - m).sum(axis=axes, keepdims=True))
    return out if keep else np.squeeze(out, axis=axes)


def _log_sum(x: np.ndarray, axes, keep: bool) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = np.log(x.sum(axis=axes, keepdims=keep))
    if _overflowed(out, x) and np.all(x >= 0):  # sum past float32's limit, log of it is not
        s = _max_abs(x, axes)
        out = np.log(s) + np.log((x / s).sum(axis=axes, keepdims=True))
        out = out if keep else np.squeeze(out, axis=axes)
    return out


def _l2_norm(x: np.ndarray, axes, keep: bool) -> np.ndarray:
    s = _max_abs(x, axes)  # always scaled: squares can overflow, or underflow to 0, in float32
    out = s * np.sqrt(np.square(x / s).sum(axis=axes, keepdims=True))
    return out if keep else np.squeeze(out, axis=axes)


def _mean(x: np.ndarray, axes, keep: bool) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = x.mean(axis=axes, keepdims=keep)
    if _overflowed(out, x):  # the sum past float32's limit, the mean is not
        s = _max_abs(x, axes)
        out = s * (x / s).mean(axis=axes, keepdims=True)
        out = out if keep else np.squeeze(out, axis=axes)
    return out


def _normalise(x: np.ndarray, axes, eps: float) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` over ``axes``; scale-safe (the layer- and instance-norm core)."""
    with np.errstate(over="ignore", invalid="ignore"):
        centred = x - x.mean(axis=axes, keepdims=True)
        var = np.mean(np.square(centred), axis=axes, keepdims=True)
    if _overflowed(var, x):  # squares past float32's limit: norm(x, eps) = norm(x / s, eps / s^2)
        s = _max_abs(x, axes)
        x = x / s
        centred = x - x.mean(axis=axes, keepdims=True)
        var = np.mean(np.square(centred), axis=axes, keepdims=True)
        eps = eps / s / s  # not eps / s**2: s**2 may overflow
    return centred / np.sqrt(var + eps)


def _softmax(a: _Args) -> np.ndarray:
    x = _f32(a["x"])
    axis = int(a.get("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _layer_norm(a: _Args) -> np.ndarray:
    x = _f32(a["x"])
    axes = a.get("axes")
    axes = tuple(range(x.ndim)) if axes is None else _axes(axes, x.ndim)
    norm_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    y = _normalise(x, axes, float(a.get("epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * _f32(a["gamma"]).reshape(norm_shape)
    if a.get("beta") is not None:
        y = y + _f32(a["beta"]).reshape(norm_shape)
    return y


def _channel(v, x: np.ndarray) -> np.ndarray:
    return _f32(v).reshape(1, -1, *[1] * (x.ndim - 2))  # (C,) -> (1, C, 1, ...)


def _batch_norm(a: _Args) -> np.ndarray:
    x = _f32(a["x"])
    y = (x - _channel(a["mean"], x)) / np.sqrt(_channel(a["variance"], x) + float(a.get("epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * _channel(a["gamma"], x)
    if a.get("beta") is not None:
        y = y + _channel(a["beta"], x)
    return y


def _instance_norm(a: _Args) -> np.ndarray:
    x = _f32(a["x"])
    axes = tuple(range(2, x.ndim))
    y = _normalise(x, axes, float(a.get("epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * _channel(a["gamma"], x)
    if a.get("beta") is not None:
        y = y + _channel(a["beta"], x)
    return y


def _erf(x: np.ndarray) -> np.ndarray:
    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # = 1 / (1 + exp(-x)), without overflow


def _gelu(a: _Args) -> np.ndarray:
    x = _f32(a["x"])
    mode = str(a.get("mode", "EXACT"))
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise ValueError(f"gelu mode must be EXACT, TANH_APPROXIMATION or SIGMOID_APPROXIMATION, got {mode!r}")


def _matmul(a: _Args) -> np.ndarray:
    x, y = _f32(a["x"]), _f32(a["y"])
    if bool(a.get("transpose_x", False)):
        x = np.swapaxes(x, -1, -2)  # (..., M, K) <- (..., K, M)
    if bool(a.get("transpose_y", False)):
        y = np.swapaxes(y, -1, -2)  # (..., K, N) <- (..., N, K)
    return np.matmul(x, y)


def _linear(a: _Args) -> np.ndarray:
    y = np.matmul(_f32(a["x"]), _f32(a["weight"]).T)  # (..., Cin) @ (Cin, Cout)
    return y if a.get("bias") is None else y + _f32(a["bias"])


def _einsum(a: _Args) -> np.ndarray:
    eq = str(a["equation"]).replace(" ", "")
    return np.einsum(eq, *[_f32(v) for v in a["values"]], optimize=True)


"""Run a converted Core ML ML Program with numpy: program-level parity without a Mac.

Core ML *prediction* needs macOS, but the program that ``coremltools`` converts (the MIL
program: a list of ops such as ``conv``, ``einsum``, ``softmax``, each with named inputs and
typed outputs) can be read on any OS. ``run_program`` executes that list, op by op, on
numpy arrays, so a test on Linux can feed the converted program an input and compare its
output with the PyTorch model it came from (``program_parity``).

Precision: each op is computed in the dtype of its output variable. A float16 program (the
default of ``ane_vit.export.to_mlprogram``) therefore rounds *every op's result* to float16,
as a float16 device does. Inside one op the arithmetic is float32: elementwise ops
(``add``, ``mul``, ``real_div``, ``sqrt``...) are then exactly IEEE float16 arithmetic (one
correctly rounded result); reductions and contractions (``conv``, ``matmul``, ``einsum``,
``linear``, ``reduce_*``, ``softmax``, ``layer_norm``...) accumulate in float32 and round
once to float16. That approximates hardware that accumulates in a wider format and rounds
at the op's output; what the Neural Engine does inside an op is not documented.

What this does NOT prove: it is not the Neural Engine (nor Core ML's CPU or GPU backends).
Devices accumulate in their own order and precision, fuse ops, may run some ops in float32
or on another compute unit, and Core ML may rewrite the program again when it compiles it;
nothing here measures speed or says where an op would run. Parity here shows that
*conversion kept the math*: the converted program, evaluated faithfully in float16, computes
what the PyTorch model computes. The book's export-and-inspection chapter (chapter 6) uses it.

Shapes: every op's result is checked against the static shape that ``coremltools``
inferred for its output variable; a mismatch raises ``RuntimeError`` naming the op.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .testing import ParityReport, assert_parity

__all__ = [
    "SUPPORTED_OPS",
    "UnsupportedOpError",
    "load_program",
    "unsupported_ops",
    "run_program",
    "program_parity",
]


class UnsupportedOpError(ValueError):
    """The program uses op types (or op settings) that ``run_program`` does not implement.

    ``op_types`` lists every one found (sorted), so one error names them all.
    """

    def __init__(self, op_types: Sequence[str]):
        self.op_types = tuple(sorted(set(op_types)))
        super().__init__(
            f"the ML Program uses {len(self.op_types)} op type(s) that ane_vit.interpret does not "
            f"support: {', '.join(self.op_types)} (see ane_vit.interpret.SUPPORTED_OPS)"
        )


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
    centred = x - x.mean(axis=axes, keepdims=True)
    var = np.mean(np.square(centred), axis=axes, keepdims=True)
    y = centred / np.sqrt(var + float(a.get("epsilon", 1e-5)))
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
    centred = x - x.mean(axis=axes, keepdims=True)
    y = centred / np.sqrt(np.mean(np.square(centred), axis=axes, keepdims=True) + float(a.get("epsilon", 1e-5)))
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


def _concat(a: _Args) -> np.ndarray:
    values = [np.asarray(v) for v in a["values"]]
    axis = int(a["axis"])
    if bool(a.get("interleave", False)):
        stacked = np.stack(values, axis=(axis % values[0].ndim) + 1)  # (..., D, n, ...)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)  # (..., D*n, ...): inputs alternate along axis
    return np.concatenate(values, axis=axis)


def _split(a: _Args) -> list[np.ndarray]:
    x = np.asarray(a["x"])
    axis = int(a["axis"]) % x.ndim
    sizes = [int(o.shape[axis]) for o in a.op.outputs]
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _reshape(a: _Args) -> np.ndarray:
    shape = _out_shape(a.op)
    if shape is None:
        shape = tuple(_ints(a["shape"]))
    return np.reshape(a["x"], shape)


def _squeeze(a: _Args) -> np.ndarray:
    x = np.asarray(a["x"])
    axes = a.get("axes")
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=_axes(axes, x.ndim))


def _expand_dims(a: _Args) -> np.ndarray:
    x = np.asarray(a["x"])
    out_rank = x.ndim + len(_ints(a["axes"]))
    return np.expand_dims(x, _axes(a["axes"], out_rank))


def _slice_by_index(a: _Args) -> np.ndarray:
    from coremltools.converters.mil.mil.ops.defs._utils import solve_slice_by_index_slice

    x = np.asarray(a["x"])
    rank = x.ndim

    def flag(name):
        v = a.get(name)
        return [False] * rank if v is None else [bool(b) for b in np.asarray(v).reshape(-1)]

    stride = a.get("stride")
    slices = solve_slice_by_index_slice(
        x.shape, np.asarray(a["begin"]), np.asarray(a["end"]),
        [1] * rank if stride is None else _ints(stride),
        flag("begin_mask"), flag("end_mask"), flag("squeeze_mask"),
    )
    y = x[tuple(slices)]
    squeeze = tuple(i for i, s in enumerate(flag("squeeze_mask")) if s)
    return np.squeeze(y, axis=squeeze) if squeeze else y


def _slice_by_size(a: _Args) -> np.ndarray:
    x = np.asarray(a["x"])
    sl = []
    for i, (b, s) in enumerate(zip(_ints(a["begin"]), _ints(a["size"]))):
        b = b + x.shape[i] if b < 0 else b
        sl.append(slice(b, b + s) if s > 0 else slice(b, None))
    return x[tuple(sl)]


def _pad(a: _Args) -> np.ndarray:
    x = np.asarray(a["x"])
    p = _ints(a["pad"])
    widths = [(0, 0)] * (x.ndim - len(p) // 2) + [(p[2 * i], p[2 * i + 1]) for i in range(len(p) // 2)]
    mode = str(a.get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=float(a.get("constant_val", 0.0)))
    return np.pad(x, widths, mode={"replicate": "edge", "reflect": "reflect"}[mode])


def _gather(a: _Args) -> np.ndarray:
    x, idx = np.asarray(a["x"]), np.asarray(a["indices"]).astype(np.int64)
    axis = int(a.get("axis", 0)) % x.ndim
    if int(a.get("batch_dims", 0)) != 0:
        raise ValueError("gather with batch_dims != 0 is not supported")
    return np.take(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)


def _upsample_nearest(a: _Args) -> np.ndarray:
    x = np.asarray(a["x"])
    sh, sw = float(a.get("scale_factor_height", 1)), float(a.get("scale_factor_width", 1))
    if sh != int(sh) or sw != int(sw):
        raise ValueError(f"upsample_nearest_neighbor with non-integer scales {(sh, sw)} is not supported")
    return x.repeat(int(sh), axis=-2).repeat(int(sw), axis=-1)


def _unary(fn: Callable) -> Callable:
    return lambda a: fn(_f32(a["x"]))


def _binary(fn: Callable) -> Callable:
    return lambda a: fn(_f32(a["x"]), _f32(a["y"]))


_OPS: dict[str, Callable[[_Args], object]] = {
    # elementwise, binary (float16 inputs -> one correctly rounded float16 result)
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.divide),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "floor_div": _binary(np.floor_divide),
    "mod": _binary(np.mod),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "logical_xor": _binary(np.logical_xor),
    # elementwise, unary
    "abs": _unary(np.abs),
    "ceil": _unary(np.ceil),
    "cos": _unary(np.cos),
    "erf": _unary(_erf),
    "exp": _unary(np.exp),
    "exp2": _unary(np.exp2),
    "floor": _unary(np.floor),
    "identity": lambda a: np.asarray(a["x"]),
    "logical_not": _unary(np.logical_not),
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "round": _unary(np.round),
    "sigmoid": _unary(_sigmoid),
    "sign": _unary(np.sign),
    "silu": _unary(lambda x: x * _sigmoid(x)),
    "sin": _unary(np.sin),
    "softplus": _unary(lambda x: np.logaddexp(0, x)),
    "sqrt": _unary(np.sqrt),
    "square": _unary(np.square),
    "tanh": _unary(np.tanh),
    "inverse": lambda a: 1.0 / (_f32(a["x"]) + float(a.get("epsilon", 1e-4))),
    "log": lambda a: np.log(_f32(a["x"]) + float(a.get("epsilon", 1e-45))),
    "rsqrt": lambda a: 1.0 / np.sqrt(_f32(a["x"]) + float(a.get("epsilon", 1e-12))),
    "clip": lambda a: np.clip(_f32(a["x"]), float(a["alpha"]), float(a["beta"])),
    "leaky_relu": lambda a: (lambda x, al: np.where(x >= 0, x, al * x))(_f32(a["x"]), float(a.get("alpha", 0.01))),
    "elu": lambda a: (lambda x, al: np.where(x > 0, x, al * (np.exp(np.minimum(x, 0)) - 1)))(_f32(a["x"]), float(a.get("alpha", 1.0))),
    "sigmoid_hard": lambda a: np.clip(float(a["alpha"]) * _f32(a["x"]) + float(a["beta"]), 0, 1),
    "threshold": lambda a: np.maximum(_f32(a["x"]), float(a["alpha"])),
    "gelu": _gelu,
    "cast": lambda a: np.asarray(a["x"]),  # the runner casts to the output dtype
    "select": lambda a: np.where(np.asarray(a["cond"]).astype(bool), a["a"], a["b"]),
    # contractions (accumulate in float32, round once)
    "conv": _conv,
    "matmul": _matmul,
    "linear": _linear,
    "einsum": _einsum,
    # normalisation, pooling, reductions
    "softmax": _softmax,
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "avg_pool": lambda a: _pool(a, "avg"),
    "max_pool": lambda a: _pool(a, "max"),
    "reduce_mean": _reduce(lambda x, ax, k: x.mean(axis=ax, keepdims=k)),
    "reduce_sum": _reduce(lambda x, ax, k: x.sum(axis=ax, keepdims=k)),
    "reduce_max": _reduce(lambda x, ax, k: x.max(axis=ax, keepdims=k)),
    "reduce_min": _reduce(lambda x, ax, k: x.min(axis=ax, keepdims=k)),
    "reduce_prod": _reduce(lambda x, ax, k: x.prod(axis=ax, keepdims=k)),
    "reduce_sum_square": _reduce(lambda x, ax, k: np.square(x).sum(axis=ax, keepdims=k)),
    "reduce_l1_norm": _reduce(lambda x, ax, k: np.abs(x).sum(axis=ax, keepdims=k)),
    "reduce_l2_norm": _reduce(lambda x, ax, k: np.sqrt(np.square(x).sum(axis=ax, keepdims=k))),
    "reduce_log_sum_exp": _reduce(lambda x, ax, k: np.log(np.exp(x).sum(axis=ax, keepdims=k))),
    "reduce_argmax": _reduce_arg(np.argmax),
    "reduce_argmin": _reduce_arg(np.argmin),
    # layout
    "reshape": _reshape,
    "transpose": lambda a: np.transpose(a["x"], _ints(a["perm"])),
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "concat": _concat,
    "stack": lambda a: np.stack([np.asarray(v) for v in a["values"]], axis=int(a["axis"])),
    "split": _split,
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    "pad": _pad,
    "tile": lambda a: np.tile(a["x"], _ints(a["reps"])),
    "gather": _gather,
    "upsample_nearest_neighbor": _upsample_nearest,
}

SUPPORTED_OPS: frozenset[str] = frozenset(_OPS) | {"const"}
"""MIL op types that ``run_program`` executes (``const`` included)."""


# ---------------------------------------------------------------------------------------
# Program access


def load_program(model):
    """The MIL program of ``model``.

    ``model`` may be a ``coremltools`` ``MLModel`` (converted in memory, or loaded from disk
    with ``skip_model_load=True``), a path to a saved ``.mlpackage``, or a MIL ``Program``.
    A model loaded from disk has no ``_mil_program``; its program is rebuilt from the
    protobuf spec and the weight file with ``coremltools``' own MIL-proto loader.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    from coremltools.converters.mil.mil import Program

    if isinstance(model, Program):
        return model
    if isinstance(model, (str, os.PathLike)):
        import coremltools as ct

        if not os.path.exists(model):
            raise ValueError(f"no such .mlpackage: {os.fspath(model)!r}")
        model = ct.models.MLModel(os.fspath(model), skip_model_load=True)
    prog = getattr(model, "_mil_program", None)
    if prog is not None:
        return prog
    if not hasattr(model, "get_spec"):
        raise TypeError(f"model must be an MLModel, a MIL Program or a path to an .mlpackage, got {type(model).__name__}")
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"model must be an ML Program (mlprogram), got a {spec.WhichOneof('Type')} model")
    from coremltools.converters.mil.frontend.milproto.load import load

    return load(model_spec=spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)


def _main(model):
    prog = load_program(model)
    if "main" not in prog.functions:
        raise ValueError(f"the program has no 'main' function; it has {sorted(prog.functions)}")
    return prog.functions["main"]


def _unsupported(func) -> list[str]:
    found = set()
    for op in func.operations:
        if op.op_type not in SUPPORTED_OPS:
            found.add(op.op_type)
        elif op.op_type in ("avg_pool", "max_pool") and op.inputs.get("ceil_mode") is not None and bool(op.inputs["ceil_mode"].val):
            found.add(f"{op.op_type}(ceil_mode=True)")
        if getattr(op, "blocks", None):
            found.add(f"{op.op_type}(nested blocks)")
    return sorted(found)


def unsupported_ops(model) -> list[str]:
    """Op types of ``model``'s main function that ``run_program`` cannot execute (sorted)."""
    return _unsupported(_main(model))


# ---------------------------------------------------------------------------------------
# Running


def _nptype(var):
    from coremltools.converters.mil.mil import types

    return types.nptype_from_builtin(var.dtype)


def _read(var, env: dict):
    if var.name in env:
        return env[var.name]
    if var.val is not None:
        return var.val
    raise RuntimeError(f"variable {var.name!r} is used before it is computed")


def run_program(model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the ``main`` function of an ML Program on numpy inputs.

    Every op type is checked before anything runs: ``UnsupportedOpError`` names all the
    unsupported ones at once. Inputs are cast to the program's input dtypes (float16 for a
    float16 program); each op's result is cast to its output var's dtype.

    Args:
        model: an ``MLModel``, a path to an ``.mlpackage``, or a MIL ``Program``.
        inputs: one array (or CPU tensor) per program input, by name, of the exact shape.

    Returns:
        ``{output name: array}`` in the program's output order and dtypes.

    Shapes: as declared by the program's inputs and outputs.
    """
    func = _main(model)
    bad = _unsupported(func)
    if bad:
        raise UnsupportedOpError(bad)
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a dict of name -> array, got {type(inputs).__name__}")
    expected = list(func.inputs)
    if sorted(inputs) != sorted(expected):
        raise ValueError(f"inputs must be exactly {expected}, got {sorted(inputs)}")

    env: dict = {}
    for name, var in func.inputs.items():
        value = inputs[name]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"input {name!r} must have shape {tuple(var.shape)}, got {tuple(value.shape)}")
        env[var.name] = value.astype(_nptype(var))

    for op in func.operations:
        if op.op_type == "const":
            env[op.outputs[0].name] = op.outputs[0].val
            continue
        values = {}
        for key, var in op.inputs.items():
            values[key] = [_read(v, env) for v in var] if isinstance(var, (list, tuple)) else _read(var, env)
        try:
            result = _OPS[op.op_type](_Args(op, values))
        except Exception as err:
            raise RuntimeError(f"op {op.name!r} ({op.op_type}) failed: {err}") from err
        results = result if isinstance(result, list) else [result]
        if len(results) != len(op.outputs):
            raise RuntimeError(f"op {op.name!r} ({op.op_type}) gave {len(results)} outputs, expected {len(op.outputs)}")
        for i, (out, value) in enumerate(zip(op.outputs, results)):
            value = np.asarray(value).astype(_nptype(out), copy=False)
            shape = _out_shape(op, i)
            if shape is not None and value.shape != shape:
                raise RuntimeError(f"op {op.name!r} ({op.op_type}) produced shape {value.shape}, the program declares {shape}")
            env[out.name] = value
    return {out.name: env[out.name] for out in func.outputs}


def program_parity(
    module: torch.nn.Module,
    example: torch.Tensor | Sequence[torch.Tensor],
    model=None,
    min_psnr: float | None = None,
    per_output: bool = False,
) -> ParityReport | dict[str, ParityReport]:
    """Compare a module's PyTorch float32 output with its converted program run here.

    Converts ``module`` with ``ane_vit.export.to_mlprogram`` (float16) unless ``model`` is
    given, runs the program with ``run_program`` and compares each output with
    ``ane_vit.testing.assert_parity``.

    Args:
        module: the PyTorch module (run in eval mode, float32, no grad).
        example: the input tensor, or tensors in the program's input order.
        model: an already converted ``MLModel`` / ``.mlpackage`` path / MIL ``Program``.
        min_psnr: if given, raise ``AssertionError`` naming the output that falls short.
        per_output: return ``{output name: ParityReport}`` instead of the worst figures.

    Returns:
        the worst ``ParityReport`` (largest max abs error, lowest PSNR) over the outputs,
        or one per output with ``per_output=True``.

    Shapes: ``example`` as the module takes it; outputs must match the module's.
    """
    examples = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if model is None:
        from .export import to_mlprogram

        model = to_mlprogram(module, examples)
    prog = load_program(model)
    names = list(_main(prog).inputs)
    if len(names) != len(examples):
        raise ValueError(f"the program takes {len(names)} inputs {names}, got {len(examples)} example tensors")
    outputs = run_program(prog, dict(zip(names, examples)))
    with torch.no_grad():
        reference = module.eval()(*examples)
    reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    if len(reference) != len(outputs):
        raise ValueError(f"the module returns {len(reference)} outputs, the program {len(outputs)}")
    reports = {
        name: assert_parity(ref, out, min_psnr=min_psnr, name=name)
        for (name, out), ref in zip(outputs.items(), reference)
    }
    if per_output:
        return reports
    return ParityReport(max(r.max_abs for r in reports.values()), min(r.psnr_db for r in reports.values()))

"""The table from MIL op type to its numpy implementation, used by ``ane_vit.interpret``.

``_OPS`` maps each supported op type (``const`` aside, which the runner reads directly) to
a function of the op's evaluated inputs; ``ane_vit.interpret.SUPPORTED_OPS`` is built from it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .layout_ops import (
    _PAD_MODES,
    _concat,
    _expand_dims,
    _gather,
    _pad,
    _reshape,
    _slice_by_index,
    _slice_by_size,
    _split,
    _squeeze,
    _upsample_nearest,
)
from .ops import (
    _GELU_MODES,
    _PAD_TYPES,
    _Args,
    _batch_norm,
    _conv,
    _einsum,
    _erf,
    _f32,
    _gelu,
    _instance_norm,
    _ints,
    _l2_norm,
    _layer_norm,
    _linear,
    _log_sum,
    _log_sum_exp,
    _matmul,
    _mean,
    _pool,
    _reduce,
    _reduce_arg,
    _sigmoid,
    _softmax,
)


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
    "reduce_mean": _reduce(_mean),
    "reduce_sum": _reduce(lambda x, ax, k: x.sum(axis=ax, keepdims=k)),
    "reduce_max": _reduce(lambda x, ax, k: x.max(axis=ax, keepdims=k)),
    "reduce_min": _reduce(lambda x, ax, k: x.min(axis=ax, keepdims=k)),
    "reduce_prod": _reduce(lambda x, ax, k: x.prod(axis=ax, keepdims=k)),
    "reduce_sum_square": _reduce(lambda x, ax, k: np.square(x).sum(axis=ax, keepdims=k)),
    "reduce_l1_norm": _reduce(lambda x, ax, k: np.abs(x).sum(axis=ax, keepdims=k)),
    "reduce_l2_norm": _reduce(_l2_norm),
    "reduce_log_sum": _reduce(_log_sum),
    "reduce_log_sum_exp": _reduce(_log_sum_exp),
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


def _integral(v) -> bool:
    return float(v) == int(float(v))


def _pad_type_ok(v) -> bool:
    return str(v).lower() in _PAD_TYPES


#: Op settings (const inputs) that the implementations above support, by op type: input
#: name -> test of its value. ``ane_vit.interpret`` checks every op against this before it
#: runs anything, so an unsupported setting is reported with the unsupported op types, not
#: discovered half-way through a run.
_SETTINGS: dict[str, dict[str, Callable[[object], bool]]] = {
    "conv": {"pad_type": _pad_type_ok},
    "avg_pool": {"pad_type": _pad_type_ok, "ceil_mode": lambda v: not bool(v)},
    "max_pool": {"pad_type": _pad_type_ok, "ceil_mode": lambda v: not bool(v)},
    "gelu": {"mode": lambda v: str(v) in _GELU_MODES},
    "pad": {"mode": lambda v: str(v) == "constant" or str(v) in _PAD_MODES},
    "gather": {"batch_dims": lambda v: int(v) == 0},
    "upsample_nearest_neighbor": {"scale_factor_height": _integral, "scale_factor_width": _integral},
}

# ---------------------------------------------------------------------------------------
# Compressed programs: constexpr_* weight expansion and activation quantize/dequantize
# (ane_vit.interpret.constexpr_ops).
from .constexpr_ops import CONSTEXPR_OPS  # noqa: E402

_OPS.update(CONSTEXPR_OPS)

"""Numpy implementations of the MIL layout ops that ``ane_vit.interpret`` runs.

Concatenation, splitting, reshapes, squeezes, slices, padding, gathers and nearest
upsampling: ops that move or select values without arithmetic. They follow the op-call
convention of ``ane_vit.interpret.ops`` (``_Args`` in, array or list of arrays out).
"""

from __future__ import annotations

import numpy as np

from .ops import _Args, _axes, _ints, _out_shape


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


#: MIL pad modes other than constant, as numpy names them (checked before a run).
_PAD_MODES = {"replicate": "edge", "reflect": "reflect"}


def _pad(a: _Args) -> np.ndarray:
    x = np.asarray(a["x"])
    p = _ints(a["pad"])
    widths = [(0, 0)] * (x.ndim - len(p) // 2) + [(p[2 * i], p[2 * i + 1]) for i in range(len(p) // 2)]
    mode = str(a.get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=float(a.get("constant_val", 0.0)))
    return np.pad(x, widths, mode=_PAD_MODES[mode])


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

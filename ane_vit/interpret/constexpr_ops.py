"""Numpy implementations of the ops of compressed programs: ``constexpr_*``, ``quantize``, ``dequantize``.

``ane_vit.compress`` (over ``coremltools.optimize.coreml``) stores compressed weights as
``constexpr_*`` ops: constant inputs (indices, tables, scales, masks) that the runtime
expands to a dense weight when it loads the model. Here they are expanded with numpy, each
written from the op's definition in the MIL spec (and tested against ``coremltools``' own
``materialized_val_inference``):

* ``constexpr_affine_dequantize`` (iOS16): ``scale * (q - zero_point)`` along ``axis``;
* ``constexpr_blockwise_shift_scale`` (iOS18): the same with one scale/offset per block;
* ``constexpr_lut_to_dense``: iOS16 takes bit-packed indices (least significant bit first)
  into one table and the output ``shape``; iOS18 takes full-shape indices and one table per
  block of the tensor (``lut: (*blocks, 2**nbits, vector_size)``);
* ``constexpr_sparse_to_dense``: iOS16 takes a bit-packed mask and ``shape``, iOS18 a
  full-shape 0/1 mask; the nonzero values fill the set positions in row-major order;
* ``constexpr_cast``: a dtype cast;
* ``quantize`` / ``dequantize`` (iOS17, activation quantization):
  ``clip(round(x / scale) + zero_point)`` (round half to even) and ``scale * (q - zero_point)``.

Dequantisation is computed in float32; the runner rounds the result to the op's output dtype.
"""

from __future__ import annotations

import numpy as np

from .ops import _Args

_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """``count`` unsigned ``nbits``-bit values packed least significant bit first into bytes."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8).reshape(-1), bitorder="little")[: count * nbits]
    bits = bits.reshape(count, nbits).astype(np.int64)  # (count, nbits), LSB first
    return (bits << np.arange(nbits)).sum(axis=1)


def _along_axis(param, rank: int, axis) -> np.ndarray:
    """A scalar or a vector parameter reshaped to broadcast along ``axis`` of a rank-``rank`` array."""
    param = np.asarray(param, dtype=np.float32)
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * rank
    shape[int(axis) % rank] = param.size
    return param.reshape(shape)


def _repeat_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Repeat each entry of a blocked parameter over its block: ``param.shape[i]`` divides ``shape[i]``."""
    for axis, (full, blocks) in enumerate(zip(shape, param.shape)):
        if full % blocks:
            raise ValueError(f"parameter shape {param.shape} does not divide the data shape {shape}")
        if full != blocks:
            param = np.repeat(param, full // blocks, axis=axis)
    return param


def _affine_dequantize(a: _Args) -> np.ndarray:
    q = np.asarray(a["quantized_data"]).astype(np.float32)
    axis = int(a["axis"])
    return _along_axis(a["scale"], q.ndim, axis) * (q - _along_axis(a["zero_point"], q.ndim, axis))


def _blockwise_shift_scale(a: _Args) -> np.ndarray:
    data = np.asarray(a["data"]).astype(np.float32)
    scale = _repeat_blocks(np.asarray(a["scale"], np.float32), data.shape)
    offset = a.get("offset")
    if offset is not None:
        data = data - _repeat_blocks(np.asarray(offset, np.float32), data.shape)
    return scale * data


def _lut_to_dense(a: _Args) -> np.ndarray:
    lut = np.asarray(a["lut"])
    if a.get("shape") is not None:  # iOS16: one table, bit-packed indices
        shape = tuple(int(s) for s in np.asarray(a["shape"]).reshape(-1))
        nbits = int(round(np.log2(lut.size)))
        indices = _unpack_bits(a["indices"], nbits, int(np.prod(shape)))
        return lut.reshape(-1)[indices].reshape(shape)
    indices = np.asarray(a["indices"]).astype(np.int64)  # iOS18: (*shape), one table per block
    if lut.shape[-1] != 1:
        raise ValueError(f"vector palettization (vector size {lut.shape[-1]}) is not supported")
    tables = _repeat_blocks(lut[..., 0], (*indices.shape, lut.shape[-2]))  # (*shape, 2**nbits)
    return np.take_along_axis(tables, indices[..., None], axis=-1)[..., 0]


def _sparse_to_dense(a: _Args) -> np.ndarray:
    values = np.asarray(a["nonzero_data"])
    if a.get("shape") is not None:  # iOS16: bit-packed flat mask
        shape = tuple(int(s) for s in np.asarray(a["shape"]).reshape(-1))
        mask = _unpack_bits(a["mask"], 1, int(np.prod(shape))).astype(bool).reshape(shape)
    else:  # iOS18: a 0/1 mask of the output's shape
        mask = np.asarray(a["mask"]) != 0
    if int(mask.sum()) != values.size:
        raise ValueError(f"the mask sets {int(mask.sum())} positions for {values.size} nonzero values")
    out = np.zeros(mask.shape, dtype=values.dtype)
    out[mask] = values  # row-major order of the set positions
    return out


def _quantize(a: _Args) -> np.ndarray:
    x = np.asarray(a["input"]).astype(np.float32)
    dtype = str(a["output_dtype"])
    if dtype not in _INT_RANGES:
        raise ValueError(f"quantize output_dtype must be int8 or uint8, got {dtype!r}")
    axis = a.get("axis", 0)
    q = np.rint(x / _along_axis(a["scale"], x.ndim, axis))  # round half to even
    if a.get("zero_point") is not None:
        q = q + _along_axis(a["zero_point"], x.ndim, axis)
    low, high = _INT_RANGES[dtype]
    return np.clip(q, low, high).astype(dtype)


def _dequantize(a: _Args) -> np.ndarray:
    q = np.asarray(a["input"]).astype(np.float32)
    axis = a.get("axis", 0)
    if a.get("zero_point") is not None:
        q = q - _along_axis(a["zero_point"], q.ndim, axis)
    return _along_axis(a["scale"], q.ndim, axis) * q


#: Op type -> implementation; merged into ``ane_vit.interpret.op_table._OPS``.
CONSTEXPR_OPS = {
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
    "constexpr_lut_to_dense": _lut_to_dense,
    "constexpr_sparse_to_dense": _sparse_to_dense,
    "constexpr_cast": lambda a: np.asarray(a["source_val"]),  # the runner casts to the output dtype
    "quantize": _quantize,
    "dequantize": _dequantize,
}

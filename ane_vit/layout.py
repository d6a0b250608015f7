"""Tensor layouts for the Apple Neural Engine (ANE).

The ANE prefers 4-D activations in the channels-first layout ``(B, C, 1, S)``: batch,
channels, a singleton height and the sequence laid along the last axis. The last axis of
every buffer is padded to a multiple of 64 bytes, so a tensor whose last axis is short
(for example the head dimension of attention, 32 in float16 = 64 bytes, fine; 1 element
= 2 bytes, padded 32x) wastes memory and bandwidth. Tensors have rank 5 at most: a limit of Core ML on every
compute unit (CPU, GPU and ANE alike), not of the ANE alone.

See ``notebooks/01_ane_layout.ipynb`` and Apple's "Deploying Transformers on the Apple
Neural Engine" for why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "ANE_ALIGN_BYTES",
    "ANE_MAX_RANK",
    "DTYPE_BYTES",
    "bnc_to_bc1s",
    "bc1s_to_bnc",
    "nchw_to_bc1s",
    "bc1s_to_nchw",
    "padded_last_axis",
    "padded_nbytes",
    "dense_nbytes",
    "moves_last_axis",
]

#: The ANE pads the last axis of each buffer to this many bytes.
ANE_ALIGN_BYTES = 64
#: Highest tensor rank Core ML supports, on every compute unit (CPU, GPU and ANE alike). It is
#: the Core ML framework's limit, enforced by coremltools at conversion (coremltools issues 1723
#: and 2291, ``Program._check_invalid_tensor_rank``); named for the book's target, not ANE-specific.
ANE_MAX_RANK = 5
#: Bytes per element of the dtypes used in this book.
DTYPE_BYTES = {"fp16": 2, "float16": 2, "fp32": 4, "float32": 4, "int32": 4, "int8": 1, "bool": 1}


def _check_rank(x: torch.Tensor, rank: int, name: str, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != rank:
        raise ValueError(f"{name} must have layout {layout} (rank {rank}), got shape {tuple(x.shape)}")


def bnc_to_bc1s(x: torch.Tensor) -> torch.Tensor:
    """Tokens ``(B, N, C)`` to the ANE layout ``(B, C, 1, N)``.

    Shapes: ``x: (B, N, C) -> (B, C, 1, N)``
    """
    _check_rank(x, 3, "x", "(B, N, C)")
    return x.transpose(1, 2).unsqueeze(2)  # (B, N, C) -> (B, C, N) -> (B, C, 1, N)


def bc1s_to_bnc(x: torch.Tensor) -> torch.Tensor:
    """The ANE layout ``(B, C, 1, S)`` back to tokens ``(B, S, C)``.

    Shapes: ``x: (B, C, 1, S) -> (B, S, C)``
    """
    _check_rank(x, 4, "x", "(B, C, 1, S)")
    if x.shape[2] != 1:
        raise ValueError(f"x must have layout (B, C, 1, S) with a singleton axis 2, got shape {tuple(x.shape)}")
    return x.squeeze(2).transpose(1, 2)  # (B, C, 1, S) -> (B, C, S) -> (B, S, C)


def nchw_to_bc1s(x: torch.Tensor) -> torch.Tensor:
    """A feature map ``(B, C, H, W)`` to ``(B, C, 1, H*W)``; a view in PyTorch (no copy).

    In a converted program it is one ``reshape`` op, and one that touches the width (last)
    axis: rows of ``W`` become one row of ``H*W``. Apple's Neural Engine rules (apple/coreai-models,
    ``neural_engine_rules.md``, 2026) say such reshapes "force a full data rewrite in memory".
    The ANE pads the last axis of its buffers to 64 bytes (Apple 2022), so the padded bytes of
    the two shapes line up only when ``W`` fills whole 64-byte lines; whether the compiler then
    skips the rewrite, Apple does not say.

    Shapes: ``x: (B, C, H, W) -> (B, C, 1, H*W)``
    """
    _check_rank(x, 4, "x", "(B, C, H, W)")
    b, c, h, w = x.shape
    return x.reshape(b, c, 1, h * w)  # (B, C, H, W) -> (B, C, 1, H*W), row-major so no data moves


def bc1s_to_nchw(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, C, 1, H*W)`` back to the feature map ``(B, C, H, W)``.

    Shapes: ``x: (B, C, 1, S) -> (B, C, H, W)`` with ``S = H*W``
    """
    _check_rank(x, 4, "x", "(B, C, 1, S)")
    if x.shape[2] != 1 or x.shape[3] != height * width:
        raise ValueError(
            f"x must be (B, C, 1, {height}*{width}={height * width}), got shape {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], x.shape[1], height, width)  # (B, C, 1, H*W) -> (B, C, H, W)


def _elem_bytes(dtype: str | int) -> int:
    if isinstance(dtype, int):
        return dtype
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPE_BYTES)} or a byte count") from None


def padded_last_axis(length: int, dtype: str | int = "fp16", align: int = ANE_ALIGN_BYTES) -> int:
    """Number of elements the last axis occupies once padded to ``align`` bytes."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    eb = _elem_bytes(dtype)
    per_line = max(1, align // eb)
    return math.ceil(length / per_line) * per_line


def dense_nbytes(shape: Sequence[int], dtype: str | int = "fp16") -> int:
    """Bytes of a tensor stored densely (no padding)."""
    return math.prod(int(s) for s in shape) * _elem_bytes(dtype)


def padded_nbytes(shape: Sequence[int], dtype: str | int = "fp16", align: int = ANE_ALIGN_BYTES) -> int:
    """Bytes of a tensor whose last axis is padded to ``align`` bytes, as the ANE stores it.

    A scalar or a 0-d shape counts as one padded line.
    """
    shape = [int(s) for s in shape] or [1]
    *outer, last = shape
    return math.prod(outer) * padded_last_axis(last, dtype, align) * _elem_bytes(dtype)


def moves_last_axis(in_shape: Sequence[int], out_shape: Sequence[int], perm: Sequence[int] | None = None) -> bool:
    """Whether a layout op changes what lies along the last (innermost, "width") axis.

    Apple's Neural Engine rules (apple/coreai-models, ``neural_engine_rules.md``) single out
    reshapes and transposes that touch the width dimension: they force a full rewrite of the
    data in memory, while regrouping the outer axes of 64-byte-padded rows can leave the rows
    where they are. The test:

    * a transpose (``perm`` given) moves the last axis unless ``perm[-1]`` is the last axis;
    * any other layout op (reshape, squeeze, expand_dims, concat, split, slice, pad, ...)
      moves it when the last axis length changes: the rows are split, merged, cut or
      extended. ``(B, C, H, W) -> (B, C*H, W)`` keeps it; ``(B, C, H, W) -> (B, C, 1, H*W)``
      moves it (rows of ``W`` merged into one of ``H*W``).

    A rank-0 shape counts as a last axis of length 1.

    Shapes: ``in_shape``, ``out_shape``: any rank; ``perm``: a permutation of ``range(rank)``.
    """
    if perm is not None:
        perm = [int(p) for p in perm]
        rank = len(perm)
        if sorted(p % rank for p in perm) != list(range(rank)):
            raise ValueError(f"perm must be a permutation of range({rank}), got {perm}")
        return rank > 0 and perm[-1] % rank != rank - 1
    last_in = int(in_shape[-1]) if len(in_shape) else 1
    last_out = int(out_shape[-1]) if len(out_shape) else 1
    return last_in != last_out

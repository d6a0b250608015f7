"""Window partition and reverse without tensors of rank above 5.

The usual (Swin) window partition reshapes ``(B, H, W, C)`` into the 6-D tensor
``(B, H/wh, wh, W/ww, ww, C)`` and permutes it. Core ML supports rank <= 5 only (on every compute unit, the ANE included), so here
the batch and the window-row axes are merged first, and every intermediate is rank 5 or
less. The result is bit-identical to the 6-D version (see ``ane_vit.reference`` and
``notebooks/02_window_partition.ipynb``).

``window_partition_nchw`` cuts a channels-first map ``(B, C, H, W)`` instead, into windows
laid along axis 2, ``(B, C, nW, N)``: the ANE layout ``(B, C, 1, S)`` with the windows where
the 1 was, which ``WindowAttention.forward_bc1s`` takes as it is (its einsums batch over
that axis). No channels-last map and no ``(B*nW, N, C)`` tokens are needed on the way, so
local attention costs one transpose in and one out (``notebooks/05_moat.ipynb``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from ._checks import positive_int, positive_ints

__all__ = [
    "window_partition",
    "window_reverse",
    "window_partition_nchw",
    "window_reverse_nchw",
    "check_window_size",
    "parse_window_size",
]


def _size(n) -> int:
    """A tensor size as a Python int, for a branch on it. While tracing, sizes are recorded
    as tensors and branching on one warns; the trace is for these fixed shapes anyway.
    (Only then are warnings filtered: dynamo, behind ``torch.export(strict=True)``, cannot trace
    ``warnings.catch_warnings``, and its sizes are plain ints for a fixed shape.)"""
    if not torch.jit.is_tracing():
        return int(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(n)


def parse_window_size(window_size: Sequence[int]) -> tuple[int, int]:
    """``window_size`` as a pair ``(wh, ww)`` of positive ints (the rule of ``ane_vit._checks``:
    no float, bool or string is rounded or converted).

    Raises:
        TypeError: if it is not a sequence of two ints (e.g. ``(7.9, 8)``).
        ValueError: for a wrong length or a side <= 0.
    """
    return positive_ints(window_size, "window_size", 2, "(wh, ww)")


def check_window_size(window_size: Sequence[int], height: int, width: int) -> tuple[int, int]:
    """Validate ``window_size`` against a ``height x width`` map and return it as a tuple.

    Raises:
        TypeError, ValueError: as ``parse_window_size``, and for a ``height``/``width`` that is
            not a positive int, or a window that does not divide the map.
    """
    wh, ww = parse_window_size(window_size)
    height, width = positive_int(height, "H"), positive_int(width, "W")
    if height % wh or width % ww:
        raise ValueError(
            f"window_size {(wh, ww)} does not divide the feature map {(height, width)}: "
            f"H % wh = {height % wh}, W % ww = {width % ww}"
        )
    return wh, ww


def window_partition(x: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """Cut a channels-last feature map into non-overlapping windows, rank <= 5 throughout.

    Windows are ordered row-major over the window grid, then by batch:
    window ``b * nW + i * (W // ww) + j`` holds rows ``i*wh:(i+1)*wh`` and columns
    ``j*ww:(j+1)*ww`` of image ``b``, exactly as Swin's 6-D partition does.

    Shapes: ``x: (B, H, W, C) -> (B*nW, wh, ww, C)`` with ``nW = (H/wh)*(W/ww)``

    Raises:
        ValueError: if ``x`` is not rank 4 or the window does not divide ``(H, W)``.
        TypeError: if ``window_size`` is not two ints (``(7.9, 8)`` is refused, not truncated).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"window_partition expects x of shape (B, H, W, C), got {shape}")
    B, H, W, C = x.shape
    wh, ww = parse_window_size(window_size) if torch.jit.is_tracing() else check_window_size(window_size, H, W)
    x = x.reshape(B * (H // wh), wh, W // ww, ww, C)  # (B*H/wh, wh, W/ww, ww, C): rows of windows
    x = x.permute(0, 2, 1, 3, 4)  # (B*H/wh, W/ww, wh, ww, C): window column before in-window row
    return x.reshape(-1, wh, ww, C)  # (B*nW, wh, ww, C)


def window_reverse(windows: torch.Tensor, window_size: Sequence[int], H: int, W: int) -> torch.Tensor:
    """Stitch windows back into a channels-last feature map; the inverse of ``window_partition``.

    Shapes: ``windows: (B*nW, wh, ww, C)`` or ``(B*nW, wh*ww, C) -> (B, H, W, C)``

    Raises:
        ValueError: on a wrong rank, ``H``/``W`` <= 0, a window that does not divide ``(H, W)``,
            or a window count that is not a multiple of ``nW``.
        TypeError: if ``window_size``, ``H`` or ``W`` is not made of ints.
    """
    if torch.jit.is_tracing():  # shapes are fixed while tracing; checks would only warn
        wh, ww = parse_window_size(window_size)
    else:
        wh, ww = check_window_size(window_size, H, W)
        _check_windows(windows, (wh, ww), H, W)
    n_windows = (H // wh) * (W // ww)
    C = windows.shape[-1]
    B = windows.shape[0] // n_windows
    x = windows.reshape(B * (H // wh), W // ww, wh, ww, C)  # (B*H/wh, W/ww, wh, ww, C)
    x = x.permute(0, 2, 1, 3, 4)  # (B*H/wh, wh, W/ww, ww, C): in-window row before window column
    return x.reshape(B, H, W, C)  # (B, H, W, C)


def _check_windows(windows: torch.Tensor, window_size: tuple[int, int], H: int, W: int) -> None:
    wh, ww = window_size
    if not isinstance(windows, torch.Tensor) or windows.dim() not in (3, 4):
        shape = tuple(windows.shape) if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ValueError(f"window_reverse expects windows of shape (B*nW, wh, ww, C) or (B*nW, wh*ww, C), got {shape}")
    expected_tokens = (wh, ww) if windows.dim() == 4 else (wh * ww,)
    if tuple(windows.shape[1:-1]) != expected_tokens:
        raise ValueError(
            f"windows of shape {tuple(windows.shape)} do not match window_size {(wh, ww)}: "
            f"expected axes 1..-2 to be {expected_tokens}"
        )
    n_windows = (H // wh) * (W // ww)
    if windows.shape[0] % n_windows:
        raise ValueError(
            f"{windows.shape[0]} windows is not a multiple of the {n_windows} windows of a {H}x{W} map"
        )


def window_partition_nchw(x: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """Cut a channels-first feature map into windows laid along axis 2, channels staying on axis 1.

    The result ``(B, C, nW, N)`` is the ANE layout ``(B, C, 1, S)`` with the windows on the
    axis that is 1 there: the attention einsums of ``WindowAttention.forward_bc1s`` batch over
    that axis, so the map never goes channels-last. Window ``i * (W // ww) + j`` holds rows
    ``i*wh:(i+1)*wh`` and columns ``j*ww:(j+1)*ww``; token ``r * ww + s`` is row ``r``, column
    ``s`` of the window (the order of ``window_partition``).

    One transpose in a converted program (none when a window spans the whole width, as on a
    map that is one window); its output's last axis is ``ww``, padded to 64 bytes on the ANE.

    Shapes: ``x: (B, C, H, W) -> (B, C, nW, wh*ww)`` with ``nW = (H/wh)*(W/ww)``

    Raises:
        ValueError: if ``x`` is not rank 4 or the window does not divide ``(H, W)``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"window_partition_nchw expects x of shape (B, C, H, W), got {shape}")
    B, C, H, W = x.shape
    wh, ww = parse_window_size(window_size) if torch.jit.is_tracing() else check_window_size(window_size, H, W)
    n_windows = (H // wh) * (W // ww)
    if _size(W) == ww:  # one window per row of windows: rows are already grouped, a reshape suffices
        return x.reshape(B, C, n_windows, wh * ww)  # (B, C, H, W) -> (B, C, nW, N): row-major, no data moves in PyTorch
    x = x.reshape(B * C * (H // wh), wh, W // ww, ww)  # (B*C*H/wh, wh, W/ww, ww): rank 4
    x = x.permute(0, 2, 1, 3)  # (B*C*H/wh, W/ww, wh, ww): window column before in-window row
    return x.reshape(B, C, n_windows, wh * ww)  # (B, C, nW, N)


def window_reverse_nchw(windows: torch.Tensor, window_size: Sequence[int], H: int, W: int) -> torch.Tensor:
    """Stitch windows laid along axis 2 back into the feature map; the inverse of
    ``window_partition_nchw``.

    Shapes: ``windows: (B, C, nW, wh*ww) -> (B, C, H, W)``

    Raises:
        ValueError: on a wrong rank or a window axis that does not match ``window_size`` and ``(H, W)``.
    """
    if torch.jit.is_tracing():  # shapes are fixed while tracing; checks would only warn
        wh, ww = parse_window_size(window_size)
    else:
        wh, ww = check_window_size(window_size, H, W)
        expected = ((H // wh) * (W // ww), wh * ww)
        if not isinstance(windows, torch.Tensor) or windows.dim() != 4 or tuple(windows.shape[2:]) != expected:
            shape = tuple(windows.shape) if isinstance(windows, torch.Tensor) else type(windows).__name__
            raise ValueError(
                f"window_reverse_nchw expects windows of shape (B, C, {expected[0]}, {expected[1]}) "
                f"for window_size {(wh, ww)} on a {H}x{W} map, got {shape}"
            )
    B, C = windows.shape[0], windows.shape[1]
    if _size(W) == ww:
        return windows.reshape(B, C, H, W)  # (B, C, nW, N) -> (B, C, H, W)
    x = windows.reshape(B * C * (H // wh), W // ww, wh, ww)  # (B*C*H/wh, W/ww, wh, ww): rank 4
    x = x.permute(0, 2, 1, 3)  # (B*C*H/wh, wh, W/ww, ww): in-window row before window column
    return x.reshape(B, C, H, W)  # (B, C, H, W)

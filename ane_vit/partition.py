"""Window partition and reverse without tensors of rank above 5.

The usual (Swin) window partition reshapes ``(B, H, W, C)`` into the 6-D tensor
``(B, H/wh, wh, W/ww, ww, C)`` and permutes it. Core ML supports rank <= 5 only (on every compute unit, the ANE included), so here
the batch and the window-row axes are merged first, and every intermediate is rank 5 or
less. The result is bit-identical to the 6-D version (see ``ane_vit.reference`` and
``notebooks/02_window_partition.ipynb``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import positive_int, positive_ints

__all__ = ["window_partition", "window_reverse", "check_window_size", "parse_window_size"]


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

"""Reference window attention and the 6-D window partition (Swin style)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import flag, positive_int
from ..attention import PEType, _parse_pe_type, relative_position_index
from ..partition import check_window_size, parse_window_size

__all__ = ["ReferenceWindowAttention", "window_partition_6d", "window_reverse_6d"]


def window_partition_6d(x: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """Swin's window partition through a rank-6 tensor.

    Shapes: ``x: (B, H, W, C) -> (B*nW, wh, ww, C)``
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"window_partition_6d expects x of shape (B, H, W, C), got {getattr(x, 'shape', x)}")
    B, H, W, C = x.shape
    wh, ww = parse_window_size(window_size) if torch.jit.is_tracing() else check_window_size(window_size, H, W)
    x = x.reshape(B, H // wh, wh, W // ww, ww, C)  # (B, H/wh, wh, W/ww, ww, C): rank 6
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/wh, W/ww, wh, ww, C)
    return x.reshape(-1, wh, ww, C)  # (B*nW, wh, ww, C)


def window_reverse_6d(windows: torch.Tensor, window_size: Sequence[int], H: int, W: int) -> torch.Tensor:
    """Inverse of ``window_partition_6d``.

    Shapes: ``windows: (B*nW, wh, ww, C) -> (B, H, W, C)``
    """
    wh, ww = parse_window_size(window_size) if torch.jit.is_tracing() else check_window_size(window_size, H, W)
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // wh) * (W // ww))
    x = windows.reshape(B, H // wh, W // ww, wh, ww, C)  # (B, H/wh, W/ww, wh, ww, C): rank 6
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/wh, wh, W/ww, ww, C)
    return x.reshape(B, H, W, C)  # (B, H, W, C)


class ReferenceWindowAttention(nn.Module):
    """Multi-head self-attention over the tokens of a window, written the common way.

    Same arguments and same function as ``ane_vit.WindowAttention`` (``split_head`` does
    not exist here: there is one batched softmax over all heads).

    Shapes: ``x: (B*nW, N, C) -> (B*nW, N, C)``
    """

    def __init__(
        self,
        dim: int,
        window_size: Sequence[int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        pe_type: PEType | str = PEType.LePE_ADD,
    ):
        super().__init__()
        dim, num_heads = positive_int(dim, "dim"), positive_int(num_heads, "num_heads")
        qkv_bias = flag(qkv_bias, "qkv_bias")
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.dim = dim
        self.window_size = parse_window_size(window_size)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.pe_type = _parse_pe_type(pe_type)
        wh, ww = self.window_size
        n = wh * ww
        if self.pe_type in (PEType.RPE, PEType.SINGLE_HEAD_RPE):
            heads = num_heads if self.pe_type == PEType.RPE else 1
            table = torch.zeros((2 * wh - 1) * (2 * ww - 1), heads)
            self.relative_position_bias_table = nn.Parameter(nn.init.trunc_normal_(table, std=0.02))
            self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        if self.pe_type == PEType.LePE_ADD:
            self.abs_pe = nn.Parameter(torch.zeros(1, n, dim))
        if self.pe_type in (PEType.LePE_ADD, PEType.LePE_FUSED):
            self.lepe = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=qkv_bias)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``x: (B*nW, N, C) -> (B*nW, N, C)``"""
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        if self.pe_type == PEType.LePE_ADD:
            x = x + self.abs_pe
        qkv = self.qkv(x).reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, h, N, d)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, h, N_q, N_k)
        if self.pe_type in (PEType.RPE, PEType.SINGLE_HEAD_RPE):
            bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]  # (N*N, h|1)
            attn = attn + bias.reshape(N, N, -1).permute(2, 0, 1).unsqueeze(0)  # + (1, h|1, N_q, N_k)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(B, N, C)  # (B, h, N, d) -> (B, N, h, d) -> (B, N, C)
        if self.pe_type in (PEType.LePE_ADD, PEType.LePE_FUSED):
            v_img = v.transpose(1, 2).reshape(B, N, C).transpose(1, 2)  # (B, C, N)
            v_img = v_img.reshape(B, C, *self.window_size)  # (B, C, wh, ww)
            out = out + self.lepe(v_img).flatten(2).transpose(1, 2)  # + (B, N, C)
        return self.proj_drop(self.proj(out))

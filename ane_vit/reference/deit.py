"""Reference DeiT, written the way common ViT code (timm's ``VisionTransformer``) is.

Tokens ``(B, N, C)``, ``nn.LayerNorm`` over the last axis, a fused-qkv attention
(``ReferenceWindowAttention`` over one ``(1, N)`` window, no position term inside
attention), an ``nn.Linear`` MLP and head. It is the ground truth that
``ane_vit.deit.DeiTANE`` is tested against, after ``ane_vit.port.deit.port_deit_weights``.

The parameter names follow timm's layout (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``,
``head``), so a DeiT checkpoint in that layout should load with ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..attention import PEType
from ..deit import DEIT_TINY, DeiTConfig, _set_geometry
from .attention import ReferenceWindowAttention

__all__ = ["ReferenceDeiT", "ReferenceDeiTBlock"]


class _PatchEmbed(nn.Module):
    """Shapes: ``x: (B, 3, H, W) -> (B, N, C)`` with ``N = HW/p^2``"""

    def __init__(self, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, H/p, W/p) -> (B, C, N) -> (B, N, C)


class _Mlp(nn.Module):
    """Shapes: ``x: (B, N, C) -> (B, N, C)``"""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ReferenceDeiTBlock(nn.Module):
    """Pre-norm transformer block on tokens.

    Shapes: ``x: (B, N, C) -> (B, N, C)``
    """

    def __init__(self, config: DeiTConfig, num_tokens: int):
        super().__init__()
        c = config.embed_dim
        self.norm1 = nn.LayerNorm(c, eps=config.layer_norm_eps)
        self.attn = ReferenceWindowAttention(
            c, (1, num_tokens), config.num_heads, qkv_bias=config.qkv_bias, pe_type=PEType.NONE
        )
        self.norm2 = nn.LayerNorm(c, eps=config.layer_norm_eps)
        self.mlp = _Mlp(c, config.mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ReferenceDeiT(nn.Module):
    """DeiT on tokens ``(B, N, C)``; same arguments as ``ane_vit.deit.DeiTANE``.

    Shapes: ``x: (B, 3, H, W) -> (B, num_classes)``, or with ``num_classes=None``
    ``x: (B, 3, H, W) -> (B, N, C)``: the final normalised tokens, class token first.
    """

    def __init__(
        self,
        config: DeiTConfig = DEIT_TINY,
        image_size: int | Sequence[int] = 224,
        num_classes: int | None = 1000,
    ):
        super().__init__()
        _set_geometry(self, config, image_size, num_classes)
        c = config.embed_dim
        self.patch_embed = _PatchEmbed(c, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))  # (1, 1, C)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, c))  # (1, N, C)
        self.blocks = nn.ModuleList(ReferenceDeiTBlock(config, self.num_tokens) for _ in range(config.depth))
        self.norm = nn.LayerNorm(c, eps=config.layer_norm_eps)
        self.head = nn.Linear(c, num_classes) if num_classes is not None else None
        with torch.no_grad():
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``x: (B, 3, H, W) -> (B, N, C)``"""
        h, w = self.image_size
        if not torch.jit.is_tracing() and (x.dim() != 4 or tuple(x.shape[1:]) != (3, h, w)):
            raise ValueError(f"ReferenceDeiT built for {h}x{w} images expects x of shape (B, 3, {h}, {w}), got {tuple(x.shape)}")
        x = self.patch_embed(x)  # (B, N-1, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N, C)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``x: (B, 3, H, W) -> (B, num_classes)`` or ``-> (B, N, C)``"""
        x = self.forward_features(x)
        return x if self.head is None else self.head(x[:, 0])  # class token (B, C) -> (B, classes)

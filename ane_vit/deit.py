"""DeiT (Touvron et al., 2021) with the whole trunk in the ANE layout ``(B, C, 1, S)``.

DeiT is a plain ViT: the image is cut into 16x16 patches, each patch becomes a token,
a class token is prepended, a learned absolute position embedding is added once, and
``depth`` pre-norm blocks (LN -> attention -> residual; LN -> MLP -> residual) follow.
It is the transformer Apple's latency chart compares MOAT with.

Here every activation stays in ``(B, C, 1, S)`` from the patch embedding to the head, so
no transpose is needed between layers (the only one left is the key transpose inside
split-head attention):

* the patch embedding is a 16x16 stride-16 convolution giving ``(B, C, H/16, W/16)``,
  and a free row-major reshape turns that map into ``(B, C, 1, S)`` tokens;
* the class token is concatenated on the last (sequence) axis;
* the norms are ``LayerNormANE`` (over the channel axis), the attention is
  ``WindowAttention`` with one window of ``(1, S)`` tokens called through
  ``forward_bc1s``, and the MLP is two 1x1 convolutions;
* the head is a 1x1 convolution on the class token, still rank 4.

The plain twin is ``ane_vit.reference.deit.ReferenceDeiT``; ``ane_vit.port.deit``
copies its weights here. See ``notebooks/01_ane_layout.ipynb`` for the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._checks import flag, positive_int, positive_ints
from .attention import PEType, WindowAttention
from .norm import LayerNormANE

__all__ = [
    "DeiTConfig",
    "DEIT_TINY",
    "DEIT_SMALL",
    "DEIT_BASE",
    "DEIT_CONFIGS",
    "DeiTBlockANE",
    "DeiTANE",
    "build_deit",
    "deit_grid",
]


@dataclass(frozen=True)
class DeiTConfig:
    """Architecture of a DeiT / ViT trunk (everything but the input size and the head).

    ``layer_norm_eps`` is 1e-6 as in the DeiT release (timm's ``VisionTransformer``).
    """

    name: str
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("patch_size", "embed_dim", "depth", "num_heads"):
            positive_int(getattr(self, name), name)
        flag(self.qkv_bias, "qkv_bias")

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


#: DeiT-Tiny, 5,717,416 parameters with a 1000-class head at 224x224 (the paper's 5.7M).
DEIT_TINY = DeiTConfig(name="deit-tiny", embed_dim=192, depth=12, num_heads=3)
#: DeiT-Small, 22,050,664 parameters with a 1000-class head (the paper's 22M).
DEIT_SMALL = DeiTConfig(name="deit-small", embed_dim=384, depth=12, num_heads=6)
#: DeiT-Base, 86,567,656 parameters with a 1000-class head (the paper's 86M).
DEIT_BASE = DeiTConfig(name="deit-base", embed_dim=768, depth=12, num_heads=12)
#: The one registry from preset names to configs.
DEIT_CONFIGS: dict[str, DeiTConfig] = {c.name: c for c in (DEIT_TINY, DEIT_SMALL, DEIT_BASE)}


def _image_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    expected = "a positive int or a pair (H, W) of positive ints"
    if isinstance(image_size, (Sequence, np.ndarray)) and not isinstance(image_size, str):
        return positive_ints(image_size, "image_size", 2, expected=expected)
    try:
        side = positive_int(image_size, "image_size")
    except (TypeError, ValueError) as err:
        raise type(err)(f"image_size must be {expected}, got {image_size!r} ({type(image_size).__name__})") from None
    return side, side


def deit_grid(config: DeiTConfig, image_size: int | Sequence[int]) -> tuple[int, int]:
    """The patch grid ``(H/p, W/p)`` of an image size, checked: both sides must be positive
    multiples of the patch size ``p``. Raises ``ValueError`` otherwise."""
    h, w = _image_pair(image_size)
    p = config.patch_size
    if h <= 0 or w <= 0 or h % p or w % p:
        raise ValueError(
            f"image_size must be positive multiples of the patch size {p} "
            f"(e.g. {14 * p} -> a 14x14 grid), got {(h, w)}"
        )
    return h // p, w // p


def _check_num_classes(num_classes: int | None) -> None:
    positive_int(num_classes, "num_classes", or_none="for features")


def _set_geometry(model: nn.Module, config: DeiTConfig, image_size: int | Sequence[int], num_classes: int | None) -> None:
    """Check a DeiT's arguments and record them on ``model`` (the ANE and the reference DeiT
    share this): ``config``, patch ``grid``, ``image_size``, ``num_classes`` and ``num_tokens``
    (class token + patches)."""
    if not isinstance(config, DeiTConfig):
        raise TypeError(f"config must be a DeiTConfig (e.g. DEIT_TINY), got {type(config).__name__}")
    _check_num_classes(num_classes)
    model.config = config
    model.grid = deit_grid(config, image_size)
    model.image_size = (model.grid[0] * config.patch_size, model.grid[1] * config.patch_size)
    model.num_classes = num_classes
    model.num_tokens = 1 + model.grid[0] * model.grid[1]


class _MlpANE(nn.Module):
    """The transformer MLP as two 1x1 convolutions with a GELU between.

    Shapes: ``x: (B, C, 1, S) -> (B, C, 1, S)``
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, C, 1, S) -> (B, hidden, 1, S) -> (B, C, 1, S)


class DeiTBlockANE(nn.Module):
    """One pre-norm transformer block in the ANE layout.

    ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``; attention is global over the
    ``num_tokens`` tokens (one ``(1, S)`` window, no position term inside attention).

    Shapes: ``x: (B, C, 1, S) -> (B, C, 1, S)``
    """

    def __init__(self, config: DeiTConfig, num_tokens: int, split_head: bool = True):
        super().__init__()
        c = config.embed_dim
        self.norm1 = LayerNormANE(c, eps=config.layer_norm_eps)
        self.attn = WindowAttention(
            c,
            window_size=(1, num_tokens),
            num_heads=config.num_heads,
            qkv_bias=config.qkv_bias,
            split_head=split_head,
            pe_type=PEType.NONE,
        )
        self.norm2 = LayerNormANE(c, eps=config.layer_norm_eps)
        self.mlp = _MlpANE(c, config.mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn.forward_bc1s(self.norm1(x))  # (B, C, 1, S): no transpose in or out
        return x + self.mlp(self.norm2(x))  # (B, C, 1, S)


class DeiTANE(nn.Module):
    """DeiT laid out for the ANE; build it with ``build_deit``.

    Args:
        config: a ``DeiTConfig`` such as ``DEIT_TINY``.
        image_size: ``H`` (square) or ``(H, W)``; multiples of the patch size. The position
            embedding has one entry per token, so the model is tied to this size.
        num_classes: classes of the linear head on the class token, or ``None`` for a
            feature extractor without head.
        split_head: passed to every ``WindowAttention`` (one softmax per head if True).

    Shapes: ``x: (B, 3, H, W) -> (B, num_classes)``, or with ``num_classes=None``
    ``x: (B, 3, H, W) -> (B, C, 1, S)``: the final normalised tokens, class token first
    (``S = 1 + (H/p)(W/p)``, 197 for DeiT-Tiny at 224).
    """

    def __init__(
        self,
        config: DeiTConfig = DEIT_TINY,
        image_size: int | Sequence[int] = 224,
        num_classes: int | None = 1000,
        split_head: bool = True,
    ):
        super().__init__()
        _set_geometry(self, config, image_size, num_classes)
        split_head = flag(split_head, "split_head")
        c, p = config.embed_dim, config.patch_size

        self.patch_embed = nn.Conv2d(3, c, kernel_size=p, stride=p)
        # Stored in the layout they are used in, so the forward pass needs no permute.
        self.cls_token = nn.Parameter(torch.zeros(1, c, 1, 1))  # (1, C, 1, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, c, 1, self.num_tokens))  # (1, C, 1, S)
        self.blocks = nn.ModuleList(DeiTBlockANE(config, self.num_tokens, split_head) for _ in range(config.depth))
        self.norm = LayerNormANE(c, eps=config.layer_norm_eps)
        self.head = nn.Conv2d(c, num_classes, kernel_size=1) if num_classes is not None else None
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # Close to DeiT's initialisation: truncated normal (std 0.02) for tokens and projections.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.patch_embed:
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def extra_repr(self) -> str:
        return f"config={self.config.name}, image_size={self.image_size}, num_tokens={self.num_tokens}, num_classes={self.num_classes}"

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"DeiTANE expects a torch.Tensor, got {type(x).__name__}")
        h, w = self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, h, w):
            raise ValueError(f"DeiTANE built for {h}x{w} images expects x of shape (B, 3, {h}, {w}), got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk: image to final normalised tokens, class token first.

        Shapes: ``x: (B, 3, H, W) -> (B, C, 1, S)``
        """
        if not torch.jit.is_tracing():  # shapes are fixed while tracing
            self._check_input(x)
        x = self.patch_embed(x)  # (B, C, H/p, W/p)
        b, c, gh, gw = x.shape
        x = x.reshape(b, c, 1, gh * gw)  # (B, C, H/p, W/p) -> (B, C, 1, S-1): a view in PyTorch (row-major)
        x = torch.cat([self.cls_token.expand(b, -1, -1, -1), x], dim=3)  # (B, C, 1, S): class token first
        x = x + self.pos_embed  # (B, C, 1, S)
        for block in self.blocks:
            x = block(x)  # (B, C, 1, S)
        return self.norm(x)  # (B, C, 1, S)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, or the final tokens if the model has no head.

        Shapes: ``x: (B, 3, H, W) -> (B, num_classes)`` or ``-> (B, C, 1, S)``
        """
        x = self.forward_features(x)  # (B, C, 1, S)
        if self.head is None:
            return x
        logits = self.head(x[:, :, :, :1])  # class token (B, C, 1, 1) -> (B, classes, 1, 1): stays rank 4
        return logits.flatten(1)  # (B, classes, 1, 1) -> (B, classes)


def build_deit(
    config: DeiTConfig | str = DEIT_TINY,
    image_size: int | Sequence[int] = 224,
    num_classes: int | None = 1000,
    split_head: bool = True,
) -> DeiTANE:
    """Build a DeiT in the ANE layout (``DeiTANE``), in eval mode.

    Args:
        config: a ``DeiTConfig`` or a name from ``DEIT_CONFIGS`` (``"deit-tiny"``, ...).
        image_size: ``H`` or ``(H, W)``, multiples of the patch size (16).
        num_classes: classes of the head, or ``None`` to return the final tokens.
        split_head: one softmax per head (True, the ANE-friendly form) or one for all.

    Shapes: ``x: (B, 3, H, W) -> (B, num_classes)`` or, with ``num_classes=None``,
    ``-> (B, C, 1, S)`` with ``S = 1 + HW/256``.

    Raises ``ValueError`` for an unknown preset name, an image size that is not a multiple
    of the patch size, or a bad ``num_classes``.
    """
    if isinstance(config, str):
        if config not in DEIT_CONFIGS:
            raise ValueError(f"unknown DeiT config {config!r}; expected one of {sorted(DEIT_CONFIGS)}")
        config = DEIT_CONFIGS[config]
    return DeiTANE(config, image_size=image_size, num_classes=num_classes, split_head=split_head).eval()

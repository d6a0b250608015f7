"""MOAT for the Apple Neural Engine: configs, one registry of architectures, the model.

MOAT (Yang et al., ICLR 2023) alternates mobile convolution and attention: a conv stem,
two stages of MBConv blocks with squeeze-excitation, then two stages of MOAT blocks
(an MBConv without SE followed by LayerNorm -> multi-head self-attention -> residual;
there is no MLP). This is the hybrid CNN-Transformer that Apple's
ml-vision-transformers-ane (the seed) ships; ``build_model`` takes the seed's arguments and
gives the same layers, so trainable parameter counts match it exactly.

ANE layout: the whole model stays NCHW. For global attention the map ``(B, C, H, W)`` is
reshaped to ``(B, C, 1, H*W)`` (a view in PyTorch, one reshape op in the program) and
normalised over its channel axis, and ``WindowAttention.forward_bc1s`` runs on it: the only
transpose in the block is the one inside attention. Local attention has two routes, the
same function. ``local_layout="channels_last"`` (the default, the seed's route): channels-last
map, ``ane_vit.window_partition`` (rank <= 5), the windows on the batch axis as
``(B*nW, C, 1, N)`` and back, seven transposes per block. ``local_layout="channels_first"``
normalises the map over channels as it is, cuts it into windows laid along axis 2,
``(B, C, nW, N)`` (``ane_vit.window_partition_nchw``), and runs the same ``forward_bc1s``,
whose einsums batch over the windows: three transposes per block (partition, keys,
reverse), fewer ops, rank 4, but its partition writes rows of ``ww`` values, a quarter of a
64-byte line for 8x8 windows. The default is the route whose layout ops write fewer bytes
that move the width (last) axis, Apple's costliest layout change ("force a full data
rewrite in memory", Apple's Neural Engine rules), with every intermediate padded as Apple
says to design for ("design for the worst case"); chapter 5 gives both routes' numbers.

The plain version is ``ane_vit.reference.moat``; ``ane_vit.port.moat`` copies weights from
it. See ``notebooks/05_moat.ipynb``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import flag, positive_int, positive_ints
from .attention import PEType, WindowAttention, _parse_pe_type
from .layers import ConvStem, MBConv
from .norm import LayerNormANE
from .partition import (
    parse_window_size,
    window_partition,
    window_partition_nchw,
    window_reverse,
    window_reverse_nchw,
)

__all__ = [
    "MOATArch",
    "MOATConfig",
    "ARCHITECTURES",
    "ATTENTION_MODES",
    "LOCAL_LAYOUTS",
    "OUTPUT_STRIDES",
    "get_stage_strides",
    "LOCAL_WINDOW_RANGE",
    "MOATBlock",
    "ClassifierHead",
    "MOAT",
    "moat_config",
    "build_model",
]

#: Attention modes. ``global`` attends over a whole stage map, ``local`` over windows.
ATTENTION_MODES = ("global", "local")
#: The layouts of local attention. ``channels_last`` (the default) is the seed's route through
#: a channels-last map and ``(B*nW, C, 1, N)`` windows on the batch axis; ``channels_first``
#: keeps the map ``(B, C, ...)`` and lays the windows along axis 2, ``(B, C, nW, N)``.
LOCAL_LAYOUTS = ("channels_first", "channels_last")
#: Supported output strides and the stride of each stage's first block.
OUTPUT_STRIDES = {32: (2, 2, 2, 2), 16: (2, 2, 2, 1), 8: (2, 2, 1, 1)}


def get_stage_strides(output_stride: int) -> tuple[int, int, int, int]:
    """Strides of the four stages for an overall ``output_stride`` (the seed's name).

    Raises:
        ValueError: if ``output_stride`` is not one of 8, 16, 32.
        TypeError: if it is not an int (``32.0`` and ``True`` are refused).
    """
    if positive_int(output_stride, "output_stride") not in OUTPUT_STRIDES:  # an int first: 32.0 == 32
        raise ValueError(f"output_stride must be one of {sorted(OUTPUT_STRIDES)}, got {output_stride!r}")
    return OUTPUT_STRIDES[output_stride]


#: Allowed height/width of a local attention window (the seed's local context).
LOCAL_WINDOW_RANGE = (6, 16)
#: Default local window: per axis, the first of these that divides the final feature map.
_DEFAULT_LOCAL_WINDOWS = (6, 8, 10)
#: Channel widths are rounded up to this with ``channel_buffer_align`` (64 bytes of fp16).
_CHANNEL_ALIGN = 32


@dataclass(frozen=True)
class MOATArch:
    """A named MOAT architecture: widths and depths of the stem and of the four stages."""

    stem_size: tuple[int, int]
    hidden_size: tuple[int, int, int, int]
    num_blocks: tuple[int, int, int, int]
    block_type: tuple[str, str, str, str] = ("mbconv", "mbconv", "moat", "moat")
    head_dim: int = 32


#: The registry, ``base_arch`` name -> architecture. Widths and depths of the MOAT paper
#: (Yang et al. 2023, arXiv:2210.01820), as its official code lists them (google-research
#: deeplab2, ``model/pixel_encoder/moat.py``); tiny-moat-0/1/2 are the three the seed ships.
ARCHITECTURES: dict[str, MOATArch] = {
    "tiny-moat-0": MOATArch((32, 32), (32, 64, 128, 256), (2, 3, 7, 2)),
    "tiny-moat-1": MOATArch((40, 40), (40, 80, 160, 320), (2, 3, 7, 2)),
    "tiny-moat-2": MOATArch((56, 56), (56, 112, 224, 448), (2, 3, 7, 2)),
    "tiny-moat-3": MOATArch((80, 80), (80, 160, 320, 640), (2, 3, 7, 2)),
    "moat-0": MOATArch((64, 64), (96, 192, 384, 768), (2, 3, 7, 2)),
    "moat-1": MOATArch((64, 64), (96, 192, 384, 768), (2, 6, 14, 2)),
    "moat-2": MOATArch((128, 128), (128, 256, 512, 1024), (2, 6, 14, 2)),
    "moat-3": MOATArch((160, 160), (160, 320, 640, 1280), (2, 12, 28, 2)),
    "moat-4": MOATArch((256, 256), (256, 512, 1024, 2048), (2, 12, 28, 2)),
    # Not in the paper: a small MOAT for 64x64 inputs (the digits of chapter 8), ~0.3 M
    # parameters, trained in minutes on a CPU; its weights ship with ane_vit (ane_vit.digits).
    "micro-moat": MOATArch((32, 32), (32, 64, 64, 128), (1, 1, 2, 1)),
}


@dataclass
class MOATConfig:
    """Everything needed to build one MOAT model (defaults: tiny-moat-0, 256x256, global).

    ``window_size[i]`` is ``None`` for MBConv stages and ``(wh, ww)`` for MOAT stages (the
    whole stage map for global attention). ``to_dict()`` gives a JSON-ready dict with
    ``pe_type`` by name. Build one with ``moat_config``/``build_model`` (which validate it).
    """

    base_arch: str = "tiny-moat-0"
    image_size: tuple[int, int] = (256, 256)
    stem_size: tuple[int, ...] = (32, 32)
    hidden_size: tuple[int, ...] = (32, 64, 128, 256)
    num_blocks: tuple[int, ...] = (2, 3, 7, 2)
    block_type: tuple[str, ...] = ("mbconv", "mbconv", "moat", "moat")
    stage_stride: tuple[int, ...] = (2, 2, 2, 2)
    window_size: tuple = (None, None, (16, 16), (8, 8))
    attention_mode: str = "global"
    output_stride: int = 32
    pe_type: PEType = PEType.LePE_ADD
    split_head: bool = True
    local_layout: str = "channels_last"
    channel_buffer_align: bool = True
    mbconv_block_expand_ratio: int = 4
    moat_block_expand_ratio: int = 4
    se_ratio: float = 0.25
    head_dim: int = 32
    num_classes: int | None = None
    stage_size: tuple = field(default=((64, 64), (32, 32), (16, 16), (8, 8)))

    def to_dict(self) -> dict:
        """``dataclasses.asdict`` with ``pe_type`` as its name, e.g. ``"LePE_ADD"``."""
        d = asdict(self)
        d["pe_type"] = self.pe_type.name
        return d


def _check_shape(shape) -> tuple[int, int, int, int]:
    b, c, h, w = positive_ints(shape, "shape", 4, "(B, 3, H, W)")
    if c != 3:
        raise ValueError(f"shape must be (B, 3, H, W), 3 colour channels, got {tuple(shape)}")
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ValueError(f"image height and width must be positive multiples of 32, got {(h, w)}")
    return b, c, h, w


def _align(c: int) -> int:
    return math.ceil(c / _CHANNEL_ALIGN) * _CHANNEL_ALIGN


def _default_local_window(final_hw: tuple[int, int]) -> tuple[int, int]:
    window = []
    for size in final_hw:
        fits = [c for c in _DEFAULT_LOCAL_WINDOWS if size % c == 0]
        if not fits:
            raise ValueError(
                f"no default local window for a final feature map of {final_hw}: none of "
                f"{_DEFAULT_LOCAL_WINDOWS} divides {size}; pass local_window_size or another input size"
            )
        window.append(fits[0])
    return tuple(window)


def moat_config(
    shape: Sequence[int] = (1, 3, 256, 256),
    base_arch: str = "tiny-moat-0",
    attention_mode: str = "global",
    output_stride: int = 32,
    split_head: bool = True,
    channel_buffer_align: bool = True,
    num_blocks: Sequence[int] | None = None,
    mbconv_block_expand_ratio: int = 4,
    moat_block_expand_ratio: int = 4,
    local_window_size: Sequence[int] | None = None,
    pe_type: PEType | str = PEType.LePE_ADD,
    num_classes: int | None = None,
    local_layout: str = "channels_last",
) -> MOATConfig:
    """Validate the ``build_model`` arguments and return the resulting ``MOATConfig``.

    Raises:
        ValueError: listing what is allowed, for an unknown ``base_arch``, an image size
            that is not a multiple of 32, an unsupported ``output_stride`` or
            ``attention_mode`` or ``local_layout``, a ``local_window_size`` with global
            attention, or a local window outside 6..16 or not dividing the attention stages' maps.
        TypeError: for a size, count or ratio that is not an int (``256.9``, ``True``, ``"8"``)
            or a flag that is not a bool (``split_head="False"``): nothing is rounded or
            converted (``ane_vit._checks``).
    """
    if not isinstance(base_arch, str) or base_arch not in ARCHITECTURES:
        raise ValueError(f"unknown base_arch {base_arch!r}; expected one of {list(ARCHITECTURES)}")
    arch = ARCHITECTURES[base_arch]
    _, _, height, width = _check_shape(shape)
    strides = get_stage_strides(output_stride)
    output_stride = int(output_stride)
    if attention_mode not in ATTENTION_MODES:
        raise ValueError(f"attention_mode must be one of {ATTENTION_MODES}, got {attention_mode!r}")
    if local_layout not in LOCAL_LAYOUTS:
        raise ValueError(f"local_layout must be one of {LOCAL_LAYOUTS}, got {local_layout!r}")
    if attention_mode == "global" and local_window_size is not None:
        raise ValueError(
            f"local_window_size={local_window_size!r} is only for attention_mode='local'; "
            "global attention uses the whole feature map (pass local_window_size=None)"
        )
    if num_blocks is None:
        num_blocks = arch.num_blocks
    num_blocks = positive_ints(num_blocks, "num_blocks", 4, "(one per stage)")
    mbconv_block_expand_ratio = positive_int(mbconv_block_expand_ratio, "mbconv_block_expand_ratio")
    moat_block_expand_ratio = positive_int(moat_block_expand_ratio, "moat_block_expand_ratio")
    num_classes = positive_int(num_classes, "num_classes", or_none="for the four stage maps")
    split_head = flag(split_head, "split_head")
    channel_buffer_align = flag(channel_buffer_align, "channel_buffer_align")

    stage_size, h, w = [], height // 2, width // 2  # after the stem
    for s in strides:
        h, w = h // s, w // s
        stage_size.append((h, w))
    attention_stages = [i for i, t in enumerate(arch.block_type) if t == "moat"]
    if attention_mode == "global":
        window = {i: stage_size[i] for i in attention_stages}
    else:
        if local_window_size is None:
            local = _default_local_window(stage_size[-1])
        else:
            local = positive_ints(local_window_size, "local_window_size", 2, "(wh, ww)")
        lo, hi = LOCAL_WINDOW_RANGE
        if not all(lo <= v <= hi for v in local):
            raise ValueError(f"local window sizes must lie in {lo}..{hi}, got {local}")
        for i in attention_stages:
            if stage_size[i][0] % local[0] or stage_size[i][1] % local[1]:
                raise ValueError(
                    f"local window {local} does not divide the stage-{i} feature map {stage_size[i]} "
                    f"(input {(height, width)}, output_stride {output_stride})"
                )
        window = {i: local for i in attention_stages}

    stem, hidden = arch.stem_size, arch.hidden_size
    if channel_buffer_align:
        stem, hidden = tuple(_align(c) for c in stem), tuple(_align(c) for c in hidden)
    for i in attention_stages:
        if hidden[i] % arch.head_dim:
            raise ValueError(f"stage-{i} width {hidden[i]} is not a multiple of head_dim {arch.head_dim}")
    return MOATConfig(
        base_arch=base_arch,
        image_size=(height, width),
        stem_size=tuple(stem),
        hidden_size=tuple(hidden),
        num_blocks=num_blocks,
        block_type=arch.block_type,
        stage_stride=strides,
        window_size=tuple(window.get(i) for i in range(4)),
        attention_mode=attention_mode,
        output_stride=output_stride,
        pe_type=_parse_pe_type(pe_type),
        split_head=split_head,
        local_layout=local_layout,
        channel_buffer_align=channel_buffer_align,
        mbconv_block_expand_ratio=mbconv_block_expand_ratio,
        moat_block_expand_ratio=moat_block_expand_ratio,
        head_dim=arch.head_dim,
        num_classes=num_classes,
        stage_size=tuple(stage_size),
    )


class MOATBlock(nn.Module):
    """MOAT block in the ANE layout: MBConv (no SE) -> LayerNorm -> attention -> residual.

    The shortcut is taken after the MBConv, before the norm. Global attention: the map is
    reshaped to ``(B, C, 1, H*W)`` (a view in PyTorch, one reshape op in the program),
    normalised over channels and fed to ``WindowAttention.forward_bc1s`` (no transpose
    around it). Local attention, ``local_layout="channels_last"`` (the default, the seed's
    route): the map goes channels-last once, is normalised over its last axis and cut into
    windows with the rank-5 ``window_partition``; attention moves the windows to
    ``(B*nW, C, 1, N)`` and back. ``local_layout="channels_first"``: the map is normalised
    over channels as it is, cut into windows along axis 2, ``(B, C, nW, N)``, with
    ``window_partition_nchw`` (one transpose) and fed to the same ``forward_bc1s``.

    Shapes: ``x: (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        window_size: Sequence[int],
        stride: int = 1,
        expand_ratio: int = 4,
        head_dim: int = 32,
        attention_mode: str = "global",
        split_head: bool = True,
        pe_type: PEType | str = PEType.LePE_ADD,
        local_layout: str = "channels_last",
    ):
        super().__init__()
        if attention_mode not in ATTENTION_MODES:
            raise ValueError(f"attention_mode must be one of {ATTENTION_MODES}, got {attention_mode!r}")
        if local_layout not in LOCAL_LAYOUTS:
            raise ValueError(f"local_layout must be one of {LOCAL_LAYOUTS}, got {local_layout!r}")
        if out_channels % positive_int(head_dim, "head_dim"):
            raise ValueError(f"out_channels={out_channels} is not a multiple of head_dim={head_dim}")
        self.attention_mode = attention_mode
        self.local_layout = local_layout
        self.window_size = parse_window_size(window_size)
        self.mbconv = MBConv(
            in_channels, out_channels, stride=stride, expand_ratio=expand_ratio, se_ratio=None, fold_pre_norm=True
        )
        self.attn_norm = LayerNormANE(out_channels)
        self.attention = WindowAttention(
            out_channels, self.window_size, out_channels // head_dim, split_head=split_head, pe_type=pe_type
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mbconv(x)  # (B, C, H, W); also the shortcut
        b, c, h, w = x.shape
        if self.attention_mode == "global":
            y = x.reshape(b, c, 1, h * w)  # (B, C, H, W) -> (B, C, 1, H*W): a view in PyTorch, one reshape op in the program
            y = self.attention.forward_bc1s(self.attn_norm(y), hw=(h, w))  # (B, C, 1, H*W); h, w stay traced
            y = y.reshape(b, c, h, w)  # (B, C, 1, H*W) -> (B, C, H, W)
        elif self.local_layout == "channels_first":
            # Norm and residual on the windows, not on the map: its last axis W is shorter than N,
            # so the map's buffers carry more 64-byte padding than the windows' (B, C, nW, N).
            xw = window_partition_nchw(x, self.window_size)  # (B, C, nW, N): windows along axis 2
            y = self.attention.forward_bc1s(self.attn_norm(xw))  # (B, C, nW, N): each window attends over its N tokens
            return window_reverse_nchw(xw + y, self.window_size, h, w)  # (B, C, H, W)
        else:
            wh, ww = self.window_size
            y = x.permute(0, 2, 3, 1)  # (B, H, W, C): channels-last for the window partition
            y = F.layer_norm(y, (c,), self.attn_norm.weight, self.attn_norm.bias, self.attn_norm.eps)
            y = window_partition(y, self.window_size).reshape(-1, wh * ww, c)  # (B*nW, wh*ww, C)
            y = self.attention(y)  # (B*nW, wh*ww, C)
            y = window_reverse(y, self.window_size, h, w).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        return x + y


class ClassifierHead(nn.Module):
    """Global average pool -> LayerNorm over channels -> 1x1 conv, in the ANE layout.

    As MOAT's classification head (deeplab2: mean, LayerNorm, 1x1 conv logits), kept NCHW
    so that the pooled ``(B, C, 1, 1)`` vector needs no transpose.

    Shapes: ``x: (B, C, H, W) -> (B, num_classes)``
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        num_classes = positive_int(num_classes, "num_classes")
        self.norm = LayerNormANE(in_channels)
        self.fc = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return self.fc(self.norm(x)).flatten(1)  # (B, K, 1, 1) -> (B, K)


class MOAT(nn.Module):
    """The MOAT backbone (and optional classifier) in the ANE layout.

    Returns the four stage outputs (NCHW), or logits when ``config.num_classes`` is set.

    Shapes: ``x: (B, 3, H, W) -> [(B, hidden_size[i], *stage_size[i]) for i in 0..3]``
    or ``-> (B, num_classes)``
    """

    def __init__(self, config: MOATConfig):
        super().__init__()
        self.config = config
        self.stem = ConvStem(tuple(config.stem_size))
        self.stages = nn.ModuleList()
        in_ch = config.stem_size[-1]
        for i, (kind, out_ch, depth) in enumerate(zip(config.block_type, config.hidden_size, config.num_blocks)):
            blocks = nn.ModuleList()
            for j in range(depth):
                stride = config.stage_stride[i] if j == 0 else 1
                cin = in_ch if j == 0 else out_ch
                if kind == "mbconv":
                    block = MBConv(
                        cin, out_ch, stride, config.mbconv_block_expand_ratio, se_ratio=config.se_ratio, fold_pre_norm=True
                    )
                elif kind == "moat":
                    block = MOATBlock(
                        cin, out_ch, config.window_size[i], stride, config.moat_block_expand_ratio,
                        config.head_dim, config.attention_mode, config.split_head, config.pe_type,
                        config.local_layout,
                    )
                else:
                    raise ValueError(f"block_type entries must be 'mbconv' or 'moat', got {kind!r}")
                blocks.append(block)
            self.stages.append(blocks)
            in_ch = out_ch
        self.head = ClassifierHead(in_ch, config.num_classes) if config.num_classes else None

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (3, *self.config.image_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"MOAT built for input (B, {expected[0]}, {expected[1]}, {expected[2]}), got {shape}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        if not torch.jit.is_tracing():  # shapes are fixed while tracing
            self._check_input(x)
        x = self.stem(x)  # (B, stem, H/2, W/2)
        outs = []
        for blocks in self.stages:
            for block in blocks:
                x = block(x)
            outs.append(x)  # (B, C_i, H_i, W_i)
        if self.head is not None:
            return self.head(x)  # (B, num_classes)
        return outs


def build_model(
    shape: Sequence[int] = (1, 3, 256, 256),
    base_arch: str = "tiny-moat-0",
    attention_mode: str = "global",
    output_stride: int = 32,
    split_head: bool = True,
    channel_buffer_align: bool = True,
    num_blocks: Sequence[int] | None = None,
    mbconv_block_expand_ratio: int = 4,
    moat_block_expand_ratio: int = 4,
    local_window_size: Sequence[int] | None = None,
    pe_type: PEType | str = PEType.LePE_ADD,
    num_classes: int | None = None,
    local_layout: str = "channels_last",
) -> tuple[MOATConfig, MOAT]:
    """Build a MOAT for a fixed input shape, as the seed's ``_build_model`` does.

    Args:
        shape: the input ``(B, 3, H, W)``; ``H`` and ``W`` multiples of 32.
        base_arch: a key of ``ARCHITECTURES`` (tiny-moat-0..3, moat-0..4).
        attention_mode: ``"global"`` (each attention stage attends over its whole map) or
            ``"local"`` (non-overlapping windows).
        output_stride: 32, 16 or 8: the resolution of the last stage relative to the input
            (stage strides (2,2,2,2), (2,2,2,1), (2,2,1,1)).
        split_head: per-head softmax (ANE-friendly) in every attention layer.
        channel_buffer_align: round stem and stage widths up to multiples of 32.
        num_blocks: blocks per stage; ``None`` uses the preset of ``base_arch`` (``(2, 3, 7, 2)``
            for the tiny-moat architectures, which is what the seed always used); an explicit value
            overrides it.
        mbconv_block_expand_ratio, moat_block_expand_ratio: MBConv expansion in the
            MBConv stages and inside the MOAT blocks.
        local_window_size: ``(wh, ww)`` for local attention, each in 6..16 and dividing the
            attention stages' maps; ``None``: per axis the first of 6, 8, 10 that divides
            the final map. Must be ``None`` for global attention.
        pe_type: position embedding of the attention layers (a ``PEType`` or its name).
        num_classes: add a classification head returning ``(B, num_classes)`` logits.
        local_layout: how local attention lays out its windows (``LOCAL_LAYOUTS``):
            ``"channels_last"`` (the default: the seed's route, windows on the batch axis,
            seven transposes per block, fewer bytes written by layout ops that move the
            last axis) or ``"channels_first"`` (windows along axis 2 of ``(B, C, nW, N)``,
            three transposes, fewer ops, rank 4). Same function; chapter 5 compares them.

    Returns:
        ``(config, model)``; the model is in training mode, like any new ``nn.Module``.

    Shapes: ``x: (B, 3, H, W) -> 4 x (B, C_i, H_i, W_i)`` or ``(B, num_classes)``
    """
    config = moat_config(
        shape=shape,
        base_arch=base_arch,
        attention_mode=attention_mode,
        output_stride=output_stride,
        split_head=split_head,
        channel_buffer_align=channel_buffer_align,
        num_blocks=num_blocks,
        mbconv_block_expand_ratio=mbconv_block_expand_ratio,
        moat_block_expand_ratio=moat_block_expand_ratio,
        local_window_size=local_window_size,
        pe_type=pe_type,
        num_classes=num_classes,
        local_layout=local_layout,
    )
    return config, MOAT(config)


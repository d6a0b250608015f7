"""Reference MOAT, written the way common PyTorch implementations are.

The conv parts (stem, MBConv with squeeze-excitation) are convolutions either way and are
shared with the ANE model (``ane_vit.layers``). The attention part is where the two differ:
here the MOAT block moves the map to channels-last tokens ``(B, N, C)``, applies
``nn.LayerNorm``, cuts windows with the 6-D (Swin) partition and runs
``ReferenceWindowAttention`` (``nn.Linear``, fused qkv, one softmax over all heads).
``ane_vit.port.moat.port_moat_weights`` copies its weights into ``ane_vit.moat.MOAT``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..attention import PEType
from ..layers import ConvStem, MBConv
from ..moat import MOATConfig, moat_config
from ..partition import parse_window_size
from .attention import ReferenceWindowAttention, window_partition_6d, window_reverse_6d

__all__ = ["ReferenceMOATBlock", "ReferenceClassifierHead", "ReferenceMOAT", "build_reference_model"]


class ReferenceMOATBlock(nn.Module):
    """MBConv (no SE) -> channels-last LayerNorm -> (window) attention -> residual.

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
        pe_type: PEType | str = PEType.LePE_ADD,
    ):
        super().__init__()
        self.attention_mode = attention_mode
        self.window_size = parse_window_size(window_size)
        self.mbconv = MBConv(in_channels, out_channels, stride=stride, expand_ratio=expand_ratio, se_ratio=None)
        self.attn_norm = nn.LayerNorm(out_channels, eps=1e-5)
        self.attention = ReferenceWindowAttention(
            out_channels, self.window_size, out_channels // head_dim, pe_type=pe_type
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mbconv(x)  # (B, C, H, W); also the shortcut
        b, c, h, w = x.shape
        y = self.attn_norm(x.permute(0, 2, 3, 1))  # (B, H, W, C)
        if self.attention_mode == "global":
            y = self.attention(y.reshape(b, h * w, c)).reshape(b, h, w, c)  # (B, H*W, C) -> (B, H, W, C)
        else:
            wh, ww = self.window_size
            windows = window_partition_6d(y, self.window_size).reshape(-1, wh * ww, c)  # (B*nW, N, C)
            y = window_reverse_6d(self.attention(windows).reshape(-1, wh, ww, c), self.window_size, h, w)  # (B, H, W, C)
        return x + y.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


class ReferenceClassifierHead(nn.Module):
    """Global average pool -> ``nn.LayerNorm`` -> ``nn.Linear``.

    Shapes: ``x: (B, C, H, W) -> (B, num_classes)``
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_channels, eps=1e-5)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.mean(dim=(2, 3))))  # (B, C) -> (B, K)


class ReferenceMOAT(nn.Module):
    """Plain MOAT: same config, same function as ``ane_vit.moat.MOAT``.

    Shapes: ``x: (B, 3, H, W) -> 4 x (B, C_i, H_i, W_i)`` or ``(B, num_classes)``
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
                    blocks.append(MBConv(cin, out_ch, stride, config.mbconv_block_expand_ratio, se_ratio=config.se_ratio))
                else:
                    blocks.append(ReferenceMOATBlock(
                        cin, out_ch, config.window_size[i], stride, config.moat_block_expand_ratio,
                        config.head_dim, config.attention_mode, config.pe_type,
                    ))
            self.stages.append(blocks)
            in_ch = out_ch
        self.head = ReferenceClassifierHead(in_ch, config.num_classes) if config.num_classes else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        x = self.stem(x)
        outs = []
        for blocks in self.stages:
            for block in blocks:
                x = block(x)
            outs.append(x)
        return self.head(x) if self.head is not None else outs


def build_reference_model(
    shape: Sequence[int] = (1, 3, 256, 256),
    base_arch: str = "tiny-moat-0",
    attention_mode: str = "global",
    output_stride: int = 32,
    channel_buffer_align: bool = True,
    num_blocks: Sequence[int] | None = None,
    mbconv_block_expand_ratio: int = 4,
    moat_block_expand_ratio: int = 4,
    local_window_size: Sequence[int] | None = None,
    pe_type: PEType | str = PEType.LePE_ADD,
    num_classes: int | None = None,
) -> tuple[MOATConfig, ReferenceMOAT]:
    """``ane_vit.moat.build_model`` for the reference model (no ``split_head``: the
    reference has one softmax over all heads, recorded as ``config.split_head=False``).

    Shapes: ``x: (B, 3, H, W) -> 4 x (B, C_i, H_i, W_i)`` or ``(B, num_classes)``
    """
    config = moat_config(
        shape=shape,
        base_arch=base_arch,
        attention_mode=attention_mode,
        output_stride=output_stride,
        split_head=False,
        channel_buffer_align=channel_buffer_align,
        num_blocks=num_blocks,
        mbconv_block_expand_ratio=mbconv_block_expand_ratio,
        moat_block_expand_ratio=moat_block_expand_ratio,
        local_window_size=local_window_size,
        pe_type=pe_type,
        num_classes=num_classes,
    )
    return config, ReferenceMOAT(config)

"""Convolutional building blocks of MOAT: the conv stem and MBConv with squeeze-excitation.

Every layer here is a convolution, a batch norm or an elementwise op on NCHW maps, which
is already the ANE's native layout: the reference MOAT (``ane_vit.reference.moat``) and the
ANE MOAT (``ane_vit.moat``) share these blocks. The layer order, bias flags and batch-norm
settings follow Apple's ml-vision-transformers-ane (the seed), so trainable parameter
counts match it exactly. The channel-axis LayerNorm of the MOAT block is
``ane_vit.norm.LayerNormANE``. See ``notebooks/05_moat.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import positive_int, positive_ints

__all__ = ["ConvStem", "SqueezeExcitation", "MBConv"]

# The seed's MBConv inherits TensorFlow's batch-norm settings (momentum 0.99 in TF's
# convention = 0.01 in PyTorch's, eps 1e-3) except for its pre-norm, which uses
# PyTorch's defaults. They change no parameter count, but they change the function.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


class ConvStem(nn.Sequential):
    """Two 3x3 convolutions that halve the resolution: conv(s2) -> GELU -> BN -> conv(s1).

    Both convolutions have a bias, as in the seed (and the MOAT paper's stem).

    Shapes: ``x: (B, in_channels, H, W) -> (B, stem_size[1], H/2, W/2)``
    """

    def __init__(self, stem_size: tuple[int, int], in_channels: int = 3):
        c0, c1 = positive_ints(stem_size, "stem_size", 2, "(c0, c1)")
        in_channels = positive_int(in_channels, "in_channels")
        super().__init__(
            nn.Conv2d(in_channels, c0, kernel_size=3, stride=2, padding=1),
            nn.GELU(),
            nn.BatchNorm2d(c0),
            nn.Conv2d(c0, c1, kernel_size=3, stride=1, padding=1),
        )


class SqueezeExcitation(nn.Module):
    """Squeeze-excitation: a per-channel gate computed from the global average.

    mean over (H, W) -> 1x1 conv (reduce, bias) -> GELU -> 1x1 conv (expand, bias) ->
    sigmoid, multiplied into the input. ``(B, C, 1, 1)`` gates broadcast along the map.

    Shapes: ``x: (B, C, H, W) -> (B, C, H, W)``
    """

    def __init__(self, channels: int, squeezed_channels: int):
        super().__init__()
        channels = positive_int(channels, "channels")
        squeezed_channels = positive_int(squeezed_channels, "squeezed_channels")
        self.reduce = nn.Conv2d(channels, squeezed_channels, kernel_size=1)
        self.act = nn.GELU()
        self.expand = nn.Conv2d(squeezed_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = torch.sigmoid(self.expand(self.act(self.reduce(s))))  # (B, C, 1, 1)
        return x * gate


class MBConv(nn.Module):
    """Inverted-residual block (MobileNetV2) with pre-norm, as MOAT uses it.

    BN (pre-norm) -> 1x1 expand (no bias) -> BN -> GELU -> 3x3 depthwise (stride, no bias)
    -> BN -> GELU -> [squeeze-excitation] -> 1x1 project (no bias) -> BN, plus a shortcut:
    identity, or a 2x2 average pool when strided, then a 1x1 conv (with bias) when the
    channel count changes.

    Args:
        in_channels, out_channels: channels of the input and of the output.
        stride: 1 or 2 (the depthwise conv's stride).
        expand_ratio: hidden width = ``in_channels * expand_ratio``.
        se_ratio: squeeze-excitation width = ``max(1, int(in_channels * se_ratio))``
            (a ratio of the block's INPUT channels, as in the seed); ``None`` or 0: no SE.
        kernel_size: depthwise kernel (odd).
        fold_pre_norm: in eval mode, compute pre-norm and 1x1 expand as ONE 1x1 conv whose
            weights and bias absorb the batch norm (exact: both are affine per channel). The
            converted program then has no separate ``batch_norm`` op for it (coremltools folds
            a batch norm *after* a conv, not one before it). Same parameters, same function;
            the ANE MOAT uses it, the reference does not.

    Shapes: ``x: (B, in_channels, H, W) -> (B, out_channels, H/stride, W/stride)``
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expand_ratio: int = 4,
        se_ratio: float | None = None,
        kernel_size: int = 3,
        fold_pre_norm: bool = False,
    ):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        expand_ratio = positive_int(expand_ratio, "expand_ratio")
        if positive_int(stride, "stride") not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        if positive_int(kernel_size, "kernel_size") % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size!r}")
        if se_ratio is not None and not 0 <= se_ratio <= 1:
            raise ValueError(f"se_ratio must be None or in [0, 1], got {se_ratio!r}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.fold_pre_norm = bool(fold_pre_norm)
        hidden = in_channels * expand_ratio
        self.pre_norm = nn.BatchNorm2d(in_channels)  # PyTorch defaults, as in the seed
        self.act = nn.GELU()
        if expand_ratio != 1:
            self.expand = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
            self.expand_norm = nn.BatchNorm2d(hidden, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        else:
            self.expand = None
        self.depthwise = nn.Conv2d(
            hidden, hidden, kernel_size, stride=stride, padding=kernel_size // 2, groups=hidden, bias=False
        )
        self.depthwise_norm = nn.BatchNorm2d(hidden, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.se = SqueezeExcitation(hidden, max(1, int(in_channels * se_ratio))) if se_ratio else None
        self.project = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)
        self.project_norm = nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.shortcut_pool = nn.AvgPool2d(kernel_size=2, stride=2) if stride == 2 else None
        self.shortcut_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def _folded_expand(self, x: torch.Tensor) -> torch.Tensor:
        """``expand(pre_norm(x))`` in eval mode as one 1x1 conv (running statistics folded in).

        Shapes: ``x: (B, C_in, H, W) -> (B, hidden, H, W)``
        """
        bn = self.pre_norm
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C_in,): pre_norm(x) = x * scale + shift
        shift = bn.bias - bn.running_mean * scale  # (C_in,)
        weight = self.expand.weight * scale.reshape(1, -1, 1, 1)  # (hidden, C_in, 1, 1)
        bias = (self.expand.weight.flatten(1) * shift).sum(dim=1)  # (hidden, C_in) . (C_in,) -> (hidden,)
        return F.conv2d(x, weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold_pre_norm and self.expand is not None and not self.training:
            y = self.act(self.expand_norm(self._folded_expand(x)))  # (B, hidden, H, W)
        elif self.expand is not None:
            y = self.act(self.expand_norm(self.expand(self.pre_norm(x))))  # (B, hidden, H, W)
        else:
            y = self.pre_norm(x)
        y = self.act(self.depthwise_norm(self.depthwise(y)))  # (B, hidden, H/s, W/s)
        if self.se is not None:
            y = self.se(y)
        y = self.project_norm(self.project(y))  # (B, out, H/s, W/s)
        shortcut = x
        if self.shortcut_pool is not None:
            shortcut = self.shortcut_pool(shortcut)
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(shortcut)
        return y + shortcut


"""Independent oracles for the blocks that the ANE MOAT and the reference MOAT share.

``tests/test_moat_reference.py`` compares two models that are both built from
``ane_vit.layers`` (``ConvStem``, ``MBConv``, ``SqueezeExcitation``): a mistake in those
blocks is on both sides and cancels. Here every block is recomputed from its definition,
with ``torch.nn.functional`` ops on the module's own weights (never the module's code):

* stem (MOAT's conv stem, as the seed builds it): 3x3 conv stride 2 (bias) -> GELU ->
  batch norm (PyTorch's default eps 1e-5) -> 3x3 conv stride 1 (bias);
* MBConv (MobileNetV2 / EfficientNet inverted residual with MOAT's pre-norm): batch norm
  (eps 1e-5) -> 1x1 expand conv -> BN -> GELU -> kxk depthwise conv (stride) -> BN -> GELU
  -> squeeze-excitation -> 1x1 project conv -> BN, plus the shortcut (2x2 average pool when
  strided, then a 1x1 conv with bias when the width changes); the inner batch norms use
  TensorFlow's eps 1e-3, as the seed's MBConv does;
* squeeze-excitation: global average over H and W, 1x1 reduce conv (bias), GELU, 1x1 expand
  conv (bias), sigmoid, times the input.

The eps values are written here as numbers, not read from the modules, so a changed eps is
caught. Everything runs in float64 in eval mode with random weights and batch-norm
statistics (``randomize_``), so the tolerance (1e-9 relative) is far below the effect of an
eps change (about 1e-4 relative).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from ane_vit.layers import ConvStem, MBConv, SqueezeExcitation
from ane_vit.testing import randomize_

STEM_BN_EPS = 1e-5  # nn.BatchNorm2d's default, as in the seed's stem
PRE_NORM_EPS = 1e-5  # the MBConv pre-norm: PyTorch's defaults in the seed
MBCONV_BN_EPS = 1e-3  # the MBConv's inner batch norms: TensorFlow's 1e-3 in the seed


def toy_gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # the exact (erf) GELU


def toy_batch_norm(x, bn, eps):
    """Eval-mode batch norm from its definition: (x - mean) / sqrt(var + eps) * gamma + beta."""
    shape = (1, -1, 1, 1)
    scale = bn.weight.reshape(shape) / torch.sqrt(bn.running_var.reshape(shape) + eps)
    return (x - bn.running_mean.reshape(shape)) * scale + bn.bias.reshape(shape)


def toy_conv1x1(x, conv):
    """A 1x1 convolution is a matrix product over the channel axis."""
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)  # (B, C_out, H, W)
    return y if conv.bias is None else y + conv.bias.reshape(1, -1, 1, 1)


def toy_squeeze_excitation(x, se):
    s = x.sum(dim=(2, 3), keepdim=True) / (x.shape[2] * x.shape[3])  # (B, C, 1, 1): mean over H and W
    gate = torch.sigmoid(toy_conv1x1(toy_gelu(toy_conv1x1(s, se.reduce)), se.expand))  # (B, C, 1, 1)
    return x * gate


def toy_mbconv(x, block, *, stride, kernel_size, expand, se):
    y = toy_batch_norm(x, block.pre_norm, PRE_NORM_EPS)
    if expand:
        y = toy_gelu(toy_batch_norm(toy_conv1x1(y, block.expand), block.expand_norm, MBCONV_BN_EPS))
    hidden = y.shape[1]
    y = F.conv2d(y, block.depthwise.weight, stride=stride, padding=kernel_size // 2, groups=hidden)
    y = toy_gelu(toy_batch_norm(y, block.depthwise_norm, MBCONV_BN_EPS))
    if se:
        y = toy_squeeze_excitation(y, block.se)
    y = toy_batch_norm(toy_conv1x1(y, block.project), block.project_norm, MBCONV_BN_EPS)
    shortcut = F.avg_pool2d(x, kernel_size=2, stride=2) if stride == 2 else x
    if x.shape[1] != y.shape[1]:
        shortcut = toy_conv1x1(shortcut, block.shortcut_conv)
    return y + shortcut


def toy_stem(x, stem):
    conv0, _, bn, conv1 = stem
    y = F.conv2d(x, conv0.weight, conv0.bias, stride=2, padding=1)
    y = toy_batch_norm(toy_gelu(y), bn, STEM_BN_EPS)
    return F.conv2d(y, conv1.weight, conv1.bias, stride=1, padding=1)


def _assert_close(expected, actual, rel=1e-9):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = float((actual - expected).abs().max())
    peak = float(expected.abs().max())
    assert peak > 0 and err <= rel * peak, f"max abs error {err:.3g} > {rel:g} x peak {peak:.3g}"


def _ready(module, seed):
    return randomize_(module, seed=seed).double().eval()


def test_stem_matches_its_definition():
    stem = _ready(ConvStem((8, 12), in_channels=3), seed=1)
    x = torch.randn(2, 3, 10, 14, dtype=torch.float64)
    with torch.no_grad():
        out = stem(x)
        _assert_close(toy_stem(x, stem), out)
    assert out.shape == (2, 12, 5, 7)


@pytest.mark.parametrize("hw", [(6, 10), (5, 3)])
def test_squeeze_excitation_matches_its_definition(hw):
    se = _ready(SqueezeExcitation(12, 3), seed=2)
    x = torch.randn(2, 12, *hw, dtype=torch.float64) + torch.linspace(-1, 1, hw[1], dtype=torch.float64)
    with torch.no_grad():
        _assert_close(toy_squeeze_excitation(x, se), se(x))


@pytest.mark.parametrize(
    "cin, cout, stride, expand_ratio, se_ratio, kernel_size",
    [
        (8, 8, 1, 4, 0.25, 3),  # identity shortcut, SE
        (8, 16, 2, 4, 0.25, 3),  # pooled + projected shortcut, SE (the MBConv stages)
        (8, 12, 1, 2, None, 5),  # projected shortcut, no SE (inside a MOAT block), 5x5
        (12, 12, 2, 1, 0.5, 3),  # no expansion conv, pooled shortcut
    ],
)
def test_mbconv_matches_its_definition(cin, cout, stride, expand_ratio, se_ratio, kernel_size):
    block = _ready(MBConv(cin, cout, stride, expand_ratio, se_ratio, kernel_size), seed=3)
    x = torch.randn(2, cin, 6, 10, dtype=torch.float64) * 2 + 0.5
    with torch.no_grad():
        out = block(x)
        expected = toy_mbconv(x, block, stride=stride, kernel_size=kernel_size, expand=expand_ratio != 1, se=bool(se_ratio))
    assert out.shape == (2, cout, 6 // stride, 10 // stride)
    _assert_close(expected, out)


def test_mbconv_widths_follow_the_seed():
    block = MBConv(8, 16, stride=2, expand_ratio=4, se_ratio=0.25)
    assert block.depthwise.in_channels == block.depthwise.groups == 32  # hidden = in x expand_ratio
    assert (block.se.reduce.in_channels, block.se.reduce.out_channels) == (32, 2)  # SE width: in x se_ratio
    for conv in (block.expand, block.depthwise, block.project):
        assert conv.bias is None  # each is followed by a batch norm
    assert block.shortcut_conv.bias is not None


def test_mbconv_batch_norm_momentum_is_tensorflows_0_99():
    # The seed's MBConv keeps 99% of the running statistics per step (TensorFlow's
    # momentum 0.99); its pre-norm uses PyTorch's default (keeps 90%).
    block = randomize_(MBConv(4, 4, expand_ratio=2), seed=4).train()
    old_pre, old_expand = block.pre_norm.running_mean.clone(), block.expand_norm.running_mean.clone()
    x = torch.randn(3, 4, 6, 6) + 2.0
    with torch.no_grad():
        block(x)
        pre = block.pre_norm
        # the expand conv's input: x normalised with its own batch statistics, then scaled and shifted
        h = F.conv2d(F.batch_norm(x, None, None, pre.weight, pre.bias, training=True, eps=PRE_NORM_EPS), block.expand.weight)
    assert torch.allclose(pre.running_mean, 0.9 * old_pre + 0.1 * x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert float(h.mean(dim=(0, 2, 3)).abs().max()) > 0.1  # so the check below can tell 0.01 from 0.1
    assert torch.allclose(block.expand_norm.running_mean, 0.99 * old_expand + 0.01 * h.mean(dim=(0, 2, 3)), atol=1e-6)

"""``LayerNormANE`` against its definition, on inputs where ``eps`` matters.

The definition (Ba et al., 2016, on the channel axis of the ANE layout): at every position
of ``x: (B, C, 1, S)``, ``(x - mean_C) / sqrt(var_C + eps) * weight + bias`` with the biased
variance (divided by C). The oracle below is written from that formula in float64; it reads
the layer's weight and bias but not its code nor its ``eps`` attribute. Inputs with a
channel variance near 1e-6 make ``eps`` (1e-5 by default) a large part of the denominator, so
ignoring it or changing it is a large error, not a rounding one.
"""

import pytest
import torch

from ane_vit.norm import LayerNormANE
from ane_vit.testing import assert_parity, randomize_


def toy_layer_norm_over_channels(x, weight, bias, eps):
    c = x.shape[1]
    mean = x.sum(dim=1, keepdim=True) / c  # (B, 1, 1, S)
    var = ((x - mean) ** 2).sum(dim=1, keepdim=True) / c  # biased, as LayerNorm defines it
    shape = (1, c) + (1,) * (x.dim() - 2)
    return (x - mean) / torch.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


def _small_variance_input(c, s=9, scale=1e-3):
    g = torch.Generator().manual_seed(0)
    # channel std ~1e-3 (variance ~1e-6, below the default eps) around a common offset
    return 0.5 + scale * torch.randn(2, c, 1, s, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("eps", [None, 1e-6, 1e-3])
def test_matches_the_definition_where_eps_matters(eps):
    c = 16
    layer = LayerNormANE(c) if eps is None else LayerNormANE(c, eps=eps)
    layer = randomize_(layer, seed=1).double().eval()
    x = _small_variance_input(c)
    with torch.no_grad():
        expected = toy_layer_norm_over_channels(x, layer.weight, layer.bias, 1e-5 if eps is None else eps)
        out = layer(x)
    assert out.shape == x.shape
    assert_parity(expected, out, atol=1e-9 * float(expected.abs().max()))


def test_eps_changes_the_output_on_small_variance():
    # The oracle itself can tell the eps values apart on this input (so the test above can fail).
    x = _small_variance_input(16)
    w, b = torch.ones(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
    outs = [toy_layer_norm_over_channels(x, w, b, eps) for eps in (1e-5, 1e-6, 0.0)]
    assert float((outs[0] - outs[1]).abs().max()) > 0.1
    assert float((outs[0] - outs[2]).abs().max()) > 0.1


def test_matches_the_definition_on_a_feature_map_and_in_float32():
    layer = randomize_(LayerNormANE(6, eps=1e-4), seed=2).eval()
    x = torch.randn(3, 6, 4, 5) * 0.02 - 1.0  # (B, C, H, W), variance ~4e-4, eps 1e-4
    with torch.no_grad():
        expected = toy_layer_norm_over_channels(x.double(), layer.weight.double(), layer.bias.double(), 1e-4)
        out = layer(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert_parity(expected, out, atol=2e-5 * float(expected.abs().max()))

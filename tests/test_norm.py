import pytest
import torch
from torch import nn

from ane_vit.norm import LayerNormANE
from ane_vit.testing import assert_parity, psnr


def _random_layer_norm(c, eps=1e-5):
    ln = nn.LayerNorm(c, eps=eps)
    with torch.no_grad():
        ln.weight.normal_(1.0, 0.5)
        ln.bias.normal_(0.0, 0.5)
    return ln


@pytest.mark.parametrize("shape", [(3, 48, 1, 37), (2, 32, 7, 5), (4, 16)])
def test_equals_nn_layer_norm_over_channels(shape):
    c = shape[1]
    ref = _random_layer_norm(c, eps=1e-6)
    ane = LayerNormANE(c, eps=1e-6)
    ane.load_state_dict(ref.state_dict())  # same parameter names and shapes
    x = torch.randn(*shape) * 3 + 1
    expected = ref(x.movedim(1, -1)).movedim(-1, 1)  # channels last for nn.LayerNorm, then back
    out = ane(x)
    assert out.shape == x.shape
    assert_parity(expected, out, atol=1e-5)


def test_without_affine_is_standardisation():
    x = torch.randn(2, 24, 1, 10)
    out = LayerNormANE(24, elementwise_affine=False)(x)
    assert dict(LayerNormANE(24, elementwise_affine=False).named_parameters()) == {}
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(2, 1, 10), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=1, unbiased=False), torch.ones(2, 1, 10), atol=1e-3, rtol=0)


def test_normalises_channels_not_the_sequence():
    ln = LayerNormANE(8, elementwise_affine=False)
    x = torch.randn(1, 8, 1, 5)
    x[:, :, :, 2] += 100.0  # one token shifted: normalising over channels removes the shift
    out = ln(x)
    ref = ln(torch.cat([x[..., :2], x[..., 2:3] - 100.0, x[..., 3:]], dim=3))
    assert_parity(ref, out, atol=1e-4)


def test_float16_with_a_large_mean():
    # A large common offset is where E[x^2] - E[x]^2 cancels in float16; the two-pass form does not.
    ln = LayerNormANE(64, elementwise_affine=False)
    x = (torch.randn(2, 64, 1, 50) + 100.0).half()  # the input already rounded to float16
    with torch.no_grad():
        ref = ln(x.float())
        half = ln.half()(x)
        mean = x.mean(dim=1, keepdim=True)
        one_pass = (x - mean) * torch.rsqrt((x * x).mean(dim=1, keepdim=True) - mean * mean + 1e-5)
    assert half.dtype == torch.float16
    assert_parity(ref, half.float(), min_psnr=40)
    assert psnr(ref, one_pass.float()) < 20  # the form we avoid really fails here (NaN: -inf dB)


def test_errors():
    with pytest.raises(ValueError, match=r"expects x of shape \(B, 16, \.\.\.\).*got \(2, 8, 1, 4\)"):
        LayerNormANE(16)(torch.zeros(2, 8, 1, 4))
    with pytest.raises(ValueError, match="num_channels must be a positive int, got 0"):
        LayerNormANE(0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        LayerNormANE(4, eps=0.0)

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


class _TextbookAffine(LayerNormANE):
    """``x_hat * weight + bias``: the order LayerNormANE used before (two ops after conversion)."""

    def _can_fold_shift(self) -> bool:
        return False


def _norm_pair(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight, bias = 1 + 0.5 * torch.randn(c, generator=g), 0.5 * torch.randn(c, generator=g)
    pair = []
    for cls in (LayerNormANE, _TextbookAffine):
        ln = cls(c)
        with torch.no_grad():
            ln.weight.copy_(weight)
            ln.bias.copy_(bias)
        pair.append(ln.eval())
    return pair


def test_converts_to_one_layer_norm_op_carrying_scale_and_shift():
    from ane_vit.export import to_mlprogram
    from ane_vit.interpret import load_program

    ln, _ = _norm_pair(48)
    prog = load_program(to_mlprogram(ln, torch.randn(1, 48, 1, 20)))
    ops = [op for op in prog.functions["main"].operations if op.op_type != "const"]
    assert [op.op_type for op in ops] == ["layer_norm"]
    (op,) = ops
    assert list(op.axes.val) == [1]
    torch.testing.assert_close(torch.tensor(op.gamma.val, dtype=torch.float32), ln.weight.detach(), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(torch.tensor(op.beta.val, dtype=torch.float32), ln.bias.detach(), atol=2e-3, rtol=1e-3)


def test_float16_large_mean_small_variance_no_worse_than_the_textbook_order():
    # float16 inputs with mean 100 and std 0.1: against float64 on the same (rounded) input,
    # in PyTorch float16 and in the converted float16 program (run with ane_vit.interpret).
    from ane_vit.export import to_mlprogram
    from ane_vit.interpret import run_program
    from ane_vit.testing import psnr

    g = torch.Generator().manual_seed(1)
    x = (100.0 + 0.1 * torch.randn(1, 64, 1, 64, generator=g)).half()
    scores = {}
    for ln in _norm_pair(64, seed=1):
        with torch.no_grad():
            exact = ln.double()(x.double())
            torch_half = ln.half()(x)
        program = to_mlprogram(ln.float(), x.float())
        (out,) = run_program(program, {"x": x.float().numpy()}).values()
        scores[type(ln).__name__] = (psnr(exact, torch_half.float()), psnr(exact, out))
    (new_torch, new_prog), (old_torch, old_prog) = scores["LayerNormANE"], scores["_TextbookAffine"]
    assert new_torch >= old_torch - 0.5 and new_torch > 30  # both limited by the float16 mean
    assert new_prog >= old_prog and new_prog > 70  # one op rounds once; layer_norm + batch_norm twice


def test_zero_weight_keeps_the_textbook_order():
    # bias / weight cannot hold a zero weight: the folded order would give NaN there
    ref = _random_layer_norm(16)
    with torch.no_grad():
        ref.weight[3] = 0.0
    ane = LayerNormANE(16)
    ane.load_state_dict(ref.state_dict())
    assert not ane._can_fold_shift()
    x = torch.randn(2, 16, 1, 9)
    assert_parity(ref(x.movedim(1, -1)).movedim(-1, 1), ane(x), atol=1e-5)

"""DeiT in the ANE layout against its plain reference: parity, float16, parameter counts, errors."""

import math

import pytest
import torch

from ane_vit.deit import DEIT_BASE, DEIT_SMALL, DEIT_TINY, DeiTANE, DeiTConfig, build_deit
from ane_vit.port.deit import port_deit_weights
from ane_vit.reference.deit import ReferenceDeiT
from ane_vit.testing import assert_parity, check_shape

SMALL_TEST = DeiTConfig(name="test-small", embed_dim=48, depth=2, num_heads=3)


def _randomize(model, qk_gain=2.0, gain=1.0, seed=0):
    """Non-trivial weights everywhere (norms, biases and tokens included), so a weight the
    port forgets, or a layout mistake, shows up. ``qk_gain`` sets how peaked attention is."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            elif name in ("cls_token", "pos_embed"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:  # weights: variance-preserving, sharper for q and k
                std = (qk_gain if ".qkv." in name else gain) / math.sqrt(p[0].numel())
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def _relative_error(reference, test):
    return float((reference - test).abs().max() / reference.abs().max())


def _tokens(x_bc1s):
    return x_bc1s.squeeze(2).transpose(1, 2)  # (B, C, 1, S) -> (B, S, C)


def _logits_and_features(model, x):
    """One forward pass; the features are caught at the final norm (what ``forward_features`` returns)."""
    caught = []
    hook = model.norm.register_forward_hook(lambda module, inputs, output: caught.append(output))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        hook.remove()
    return logits, caught[0]


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference_tiny():
    return _randomize(ReferenceDeiT(DEIT_TINY, 224, 1000))


@pytest.mark.parametrize("split_head", [True, False])
def test_deit_tiny_matches_reference(reference_tiny, images, split_head):
    ane = port_deit_weights(reference_tiny, build_deit(DEIT_TINY, 224, 1000, split_head=split_head))
    logits_ref, feats_ref = _logits_and_features(reference_tiny, images)
    logits_ane, feats_ane = _logits_and_features(ane, images)
    check_shape(logits_ane, (2, 1000), "logits")
    check_shape(feats_ane, (2, 192, 1, 197), "features")
    assert_parity(logits_ref, logits_ane, min_psnr=80, name="logits")
    assert_parity(feats_ref, _tokens(feats_ane), min_psnr=80, name="features")
    assert _relative_error(logits_ref, logits_ane) <= 1e-4
    assert _relative_error(feats_ref, _tokens(feats_ane)) <= 1e-4


def test_parity_test_can_fail(reference_tiny, images):
    # The same architecture with its own weights (no port) is far from the reference.
    with torch.no_grad():
        assert _relative_error(reference_tiny(images[:1]), build_deit()(images[:1])) > 1e-2


@pytest.mark.parametrize("split_head", [True, False])
def test_headless_model_returns_final_tokens(split_head):
    # A rectangular image, to check the patch grid is read row-major as the reference does.
    ref = _randomize(ReferenceDeiT(SMALL_TEST, (96, 64), num_classes=None))
    ane = port_deit_weights(ref, build_deit(SMALL_TEST, (96, 64), num_classes=None, split_head=split_head))
    x = torch.randn(3, 3, 96, 64)
    with torch.no_grad():
        out_ref, out_ane = ref(x), ane(x)
    check_shape(out_ane, (3, 48, 1, 1 + 6 * 4), "features")
    assert ane.head is None and ref.head is None
    assert _relative_error(out_ref, _tokens(out_ane)) <= 1e-4
    with torch.no_grad():
        assert torch.equal(out_ane, ane.forward_features(x))


def test_float16_against_float32_at_224(images):
    # The ANE computes in float16. (With sharper random attention, qk_gain=2, float16 falls
    # to 45-52 dB in this model and in the reference alike: a float16 limit, not the layout's.)
    model = port_deit_weights(_randomize(ReferenceDeiT(), qk_gain=1.0, seed=2), build_deit(split_head=True))
    logits, feats = _logits_and_features(model, images[:1])
    logits16, feats16 = _logits_and_features(model.half(), images[:1].half())
    assert logits16.dtype == torch.float16
    assert_parity(logits, logits16.float(), min_psnr=60, name="float16 logits")
    assert_parity(feats, feats16.float(), min_psnr=60, name="float16 features")


def test_parameter_counts():
    # DeiT-Tiny, from the architecture: patch embedding 3*16*16*192 + 192 = 147,648;
    # class token 192; position embedding 197*192 = 37,824; 12 blocks of 444,864
    # (2 norms 768, qkv 111,168, proj 37,056, fc1 148,224, fc2 147,648); final norm 384;
    # head 192*1000 + 1000 = 193,000. Total 5,717,416 (the paper's 5.7M).
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        assert _count(build_deit(DEIT_TINY, 224, 1000)) == 5_717_416
        assert _count(ReferenceDeiT(DEIT_TINY, 224, 1000)) == 5_717_416
        assert _count(build_deit(DEIT_TINY, 224, None)) == 5_717_416 - 193_000
        assert _count(build_deit(DEIT_SMALL, 224, 1000)) == 22_050_664  # the paper's 22M
        assert _count(ReferenceDeiT(DEIT_SMALL, 224, 1000)) == 22_050_664
        assert _count(build_deit(DEIT_BASE, 224, 1000)) == 86_567_656  # the paper's 86M


def test_trunk_stays_in_the_ane_layout():
    model = build_deit(SMALL_TEST, 64, num_classes=10)
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape))) for b in model.blocks]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert seen == [(1, 48, 1, 17)] * 2
    assert model.cls_token.shape == (1, 48, 1, 1) and model.pos_embed.shape == (1, 48, 1, 17)
    assert all(b.attn.window_size == (1, 17) and b.attn.split_head for b in model.blocks)
    assert not any(b.attn.split_head for b in build_deit(SMALL_TEST, 64, split_head=False).blocks)


@pytest.mark.slow
def test_converted_program_keeps_the_ane_layout():
    pytest.importorskip("coremltools")
    from ane_vit.analysis import op_histogram
    from ane_vit.export import to_mlprogram

    ops = op_histogram(to_mlprogram(build_deit(SMALL_TEST, 64, num_classes=10), torch.randn(1, 3, 64, 64)))
    depth, heads = SMALL_TEST.depth, SMALL_TEST.num_heads
    assert ops["transpose"] == depth  # only the key transpose inside each attention
    assert ops["softmax"] == depth * heads  # split softmax: one per head
    assert ops["layer_norm"] == 2 * depth + 1  # LayerNormANE is recognised as one layer_norm op
    assert ops["conv"] == 1 + depth * 6 + 1  # patch embedding; q, k, v, proj, fc1, fc2; head
    assert "linear" not in ops and "matmul" not in ops


def test_build_accepts_preset_names():
    with torch.device("meta"):
        assert build_deit("deit-small", 32, num_classes=None).config is DEIT_SMALL
        assert not build_deit("deit-tiny", 32).training


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(image_size=225), ValueError, r"multiples of the patch size 16.*got \(225, 225\)"),
        (dict(image_size=(224, 200)), ValueError, r"multiples of the patch size 16.*got \(224, 200\)"),
        (dict(image_size=(224,)), ValueError, r"int or a pair \(H, W\)"),
        (dict(config="deit-huge"), ValueError, r"unknown DeiT config 'deit-huge'; expected one of \['deit-base'"),
        (dict(config=object()), TypeError, "config must be a DeiTConfig"),
        (dict(num_classes=0), ValueError, "num_classes must be a positive int, or None for features; got 0"),
    ],
)
def test_build_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_deit(**kwargs)


@pytest.mark.parametrize("model_class", [DeiTANE, ReferenceDeiT])
@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_forward_errors_name_the_expected_shape(model_class, shape):
    model = model_class(SMALL_TEST, 64, num_classes=10)
    with pytest.raises(ValueError, match=rf"expects x of shape \(B, 3, 64, 64\), got \({', '.join(map(str, shape))}\)"):
        model(torch.zeros(shape))


def test_port_refuses_mismatched_models():
    ref = ReferenceDeiT(SMALL_TEST, 64, num_classes=10)
    with pytest.raises(ValueError, match="differ in num_classes: 10 != None"):
        port_deit_weights(ref, build_deit(SMALL_TEST, 64, num_classes=None))
    with pytest.raises(ValueError, match=r"differ in image_size: \(64, 64\) != \(32, 32\)"):
        port_deit_weights(ref, build_deit(SMALL_TEST, 32, num_classes=10))
    with pytest.raises(ValueError, match="differ in config"):
        port_deit_weights(ref, build_deit(DeiTConfig(name="test-small", embed_dim=48, depth=3, num_heads=3), 64, 10))
    with pytest.raises(TypeError, match=r"expects \(ReferenceDeiT, DeiTANE\), got \(DeiTANE, DeiTANE\)"):
        port_deit_weights(build_deit(SMALL_TEST, 64, 10), build_deit(SMALL_TEST, 64, 10))

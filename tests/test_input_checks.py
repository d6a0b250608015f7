"""Bad input to the layers and models: one rule for sizes and flags (``ane_vit._checks``),
nothing truncated or converted silently, and clear errors at the boundary. Every message is
matched exactly."""

import re

import numpy as np
import pytest
import torch

from ane_vit import LayerNormANE, PEType, WindowAttention, window_partition, window_reverse
from ane_vit._checks import flag, positive_int, positive_ints
from ane_vit.deit import DeiTConfig, build_deit
from ane_vit.layers import ConvStem, MBConv
from ane_vit.moat import build_model, get_stage_strides, moat_config
from ane_vit.reference import ReferenceWindowAttention, build_reference_model, window_reverse_6d


def raises_exactly(error, message):
    return pytest.raises(error, match="^" + re.escape(message) + "$")


# --------------------------------------------------------------------------- the parser


@pytest.mark.parametrize("value", [1, 7, np.int64(8), np.int32(3), np.uint8(2)])
def test_positive_int_accepts_ints_and_numpy_integers(value):
    out = positive_int(value, "n")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize(
    "value, error, message",
    [
        (True, TypeError, "n must be a positive int, got True (bool)"),
        (np.bool_(True), TypeError, "n must be a positive int, got np.True_ (bool)"),
        (8.0, TypeError, "n must be a positive int, got 8.0 (float)"),
        (np.float32(8), TypeError, "n must be a positive int, got np.float32(8.0) (float32)"),
        ("8", TypeError, "n must be a positive int, got '8' (str)"),
        (None, TypeError, "n must be a positive int, got None (NoneType)"),
        (torch.tensor(8), TypeError, "n must be a positive int, got tensor(8) (Tensor)"),
        (0, ValueError, "n must be a positive int, got 0"),
        (-3, ValueError, "n must be a positive int, got -3"),
    ],
)
def test_positive_int_rejects(value, error, message):
    with raises_exactly(error, message):
        positive_int(value, "n")


def test_positive_int_or_none():
    assert positive_int(None, "k", or_none="for features") is None
    with raises_exactly(ValueError, "k must be a positive int, or None for features; got 0"):
        positive_int(0, "k", or_none="for features")


@pytest.mark.parametrize(
    "values, error, message",
    [
        ((7.9, 8), TypeError, "w must be a pair (wh, ww) of positive ints, got (7.9, 8): 7.9 (float) is not an int"),
        ((True, 8), TypeError, "w must be a pair (wh, ww) of positive ints, got (True, 8): True (bool) is not an int"),
        ("88", TypeError, "w must be a pair (wh, ww) of positive ints, got '88' (str)"),
        (8, TypeError, "w must be a pair (wh, ww) of positive ints, got 8 (int)"),
        ((8,), ValueError, "w must be a pair (wh, ww) of positive ints, got (8,) (1 entry)"),
        ((8, 8, 8), ValueError, "w must be a pair (wh, ww) of positive ints, got (8, 8, 8) (3 entries)"),
        ((0, 8), ValueError, "w must be a pair (wh, ww) of positive ints, got (0, 8): 0 is not positive"),
    ],
)
def test_positive_ints_rejects(values, error, message):
    with raises_exactly(error, message):
        positive_ints(values, "w", 2, "(wh, ww)")


def test_positive_ints_accepts_sequences_of_ints():
    assert positive_ints([8, np.int64(4)], "w", 2) == (8, 4)
    assert positive_ints(torch.Size([1, 3, 8, 8]), "s", 4) == (1, 3, 8, 8)
    assert positive_ints(np.array([2, 3]), "w", 2) == (2, 3)


@pytest.mark.parametrize("value", ["False", 0, 1, None, "true"])
def test_flag_takes_only_bools(value):
    with raises_exactly(TypeError, f"f must be True or False, got {value!r} ({type(value).__name__})"):
        flag(value, "f")
    assert flag(False, "f") is False and flag(np.bool_(True), "f") is True


# --------------------------------------------------------------------------- partition


def test_window_partition_refuses_a_fractional_window():
    # was: silently 7x8 windows
    with raises_exactly(TypeError, "window_size must be a pair (wh, ww) of positive ints, got (7.9, 8): 7.9 (float) is not an int"):
        window_partition(torch.zeros(1, 16, 16, 4), (7.9, 8))
    with raises_exactly(TypeError, "window_size must be a pair (wh, ww) of positive ints, got (True, 8): True (bool) is not an int"):
        window_partition(torch.zeros(1, 16, 16, 4), (True, 8))


@pytest.mark.parametrize(
    "H, W, error, message",
    [
        (0, 16, ValueError, "H must be a positive int, got 0"),  # was ZeroDivisionError
        (16, -8, ValueError, "W must be a positive int, got -8"),
        (16.0, 16, TypeError, "H must be a positive int, got 16.0 (float)"),
        (16, np.float64(16), TypeError, "W must be a positive int, got np.float64(16.0) (float64)"),
    ],
)
@pytest.mark.parametrize("reverse", [window_reverse, window_reverse_6d])
def test_window_reverse_checks_H_and_W(reverse, H, W, error, message):
    with raises_exactly(error, message):
        reverse(torch.zeros(4, 8, 8, 3), (8, 8), H, W)


def test_window_reverse_takes_numpy_ints():
    x = torch.randn(2, 16, 8, 3)
    assert torch.equal(window_reverse(window_partition(x, (8, 4)), (8, 4), np.int64(16), np.int64(8)), x)


# --------------------------------------------------------------------------- attention


_ATTENTION_CASES = [
    (dict(dim=True), TypeError, "dim must be a positive int, got True (bool)"),
    (dict(dim=32.0), TypeError, "dim must be a positive int, got 32.0 (float)"),
    (dict(num_heads=2.0), TypeError, "num_heads must be a positive int, got 2.0 (float)"),
    (dict(window_size=(4.5, 4)), TypeError,
     "window_size must be a pair (wh, ww) of positive ints, got (4.5, 4): 4.5 (float) is not an int"),
    (dict(split_head="False"), TypeError, "split_head must be True or False, got 'False' (str)"),
    (dict(qkv_bias=1), TypeError, "qkv_bias must be True or False, got 1 (int)"),
]


@pytest.mark.parametrize(
    "cls, kwargs, error, message",
    [(WindowAttention, *case) for case in _ATTENTION_CASES]
    + [(ReferenceWindowAttention, *case) for case in _ATTENTION_CASES if "split_head" not in case[0]],  # no split_head there
)
def test_attention_arguments(cls, kwargs, error, message):
    args = dict(dim=32, window_size=(4, 4), num_heads=2)
    args.update(kwargs)
    with raises_exactly(error, message):
        cls(**args)


@pytest.mark.parametrize("pe_type", list(PEType))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_attention_input_dtype_is_the_parameters_dtype_for_every_pe_type(pe_type, dtype):
    # was: a bias-type RuntimeError from torch for float64, and LePE_ADD alone silently
    # promoted a float16 input to a float32 output.
    layer = WindowAttention(32, (4, 4), 2, pe_type=pe_type)
    x = torch.randn(2, 16, 32, dtype=dtype)
    message = (
        f"WindowAttention has torch.float32 parameters and expects a torch.float32 input, got {dtype}; "
        f"convert the input (x.to(torch.float32)) or the layer (layer.to({dtype}))"
    )
    with raises_exactly(TypeError, message):
        layer(x)
    with raises_exactly(TypeError, message):
        layer.forward_bc1s(x.permute(0, 2, 1).unsqueeze(2))
    with torch.no_grad():
        assert layer.to(dtype)(x).dtype == dtype  # the same dtype on both sides runs


# --------------------------------------------------------------------------- norm, layers


def test_layer_norm_ane_given_a_list():
    with raises_exactly(TypeError, "LayerNormANE(4) expects a torch.Tensor of shape (B, 4, ...), e.g. (B, 4, 1, S); got list"):
        LayerNormANE(4)([[1.0, 2.0, 3.0, 4.0]])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_channels=True), TypeError, "num_channels must be a positive int, got True (bool)"),
        (dict(num_channels=16.0), TypeError, "num_channels must be a positive int, got 16.0 (float)"),
        (dict(elementwise_affine="no"), TypeError, "elementwise_affine must be True or False, got 'no' (str)"),
    ],
)
def test_layer_norm_ane_arguments(kwargs, error, message):
    args = dict(num_channels=16)
    args.update(kwargs)
    with raises_exactly(error, message):
        LayerNormANE(**args)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: MBConv(32.0, 32), TypeError, "in_channels must be a positive int, got 32.0 (float)"),
        (lambda: MBConv(32, 32, stride=True), TypeError, "stride must be a positive int, got True (bool)"),
        (lambda: MBConv(32, 32, expand_ratio=4.0), TypeError, "expand_ratio must be a positive int, got 4.0 (float)"),
        (lambda: MBConv(32, 32, kernel_size=3.0), TypeError, "kernel_size must be a positive int, got 3.0 (float)"),
        (lambda: ConvStem((32, 32.5)), TypeError,
         "stem_size must be a pair (c0, c1) of positive ints, got (32, 32.5): 32.5 (float) is not an int"),
    ],
)
def test_layers_arguments(build, error, message):
    with raises_exactly(error, message):
        build()


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        # was: a 256x256 model
        (dict(shape=(1, 3, 256.9, 256)), TypeError,
         "shape must be 4 positive ints (B, 3, H, W), got (1, 3, 256.9, 256): 256.9 (float) is not an int"),
        (dict(shape=(True, 3, 256, 256)), TypeError,
         "shape must be 4 positive ints (B, 3, H, W), got (True, 3, 256, 256): True (bool) is not an int"),
        # was: split_head=True
        (dict(split_head="False"), TypeError, "split_head must be True or False, got 'False' (str)"),
        (dict(channel_buffer_align=0), TypeError, "channel_buffer_align must be True or False, got 0 (int)"),
        (dict(num_blocks=(2, 3, 7.0, 2)), TypeError,
         "num_blocks must be 4 positive ints (one per stage), got (2, 3, 7.0, 2): 7.0 (float) is not an int"),
        (dict(mbconv_block_expand_ratio=4.0), TypeError, "mbconv_block_expand_ratio must be a positive int, got 4.0 (float)"),
        (dict(moat_block_expand_ratio=True), TypeError, "moat_block_expand_ratio must be a positive int, got True (bool)"),
        (dict(num_classes=True), TypeError,
         "num_classes must be a positive int, or None for the four stage maps; got True (bool)"),
        (dict(output_stride=32.0), TypeError, "output_stride must be a positive int, got 32.0 (float)"),
        (dict(attention_mode="local", local_window_size=(8.5, 8)), TypeError,
         "local_window_size must be a pair (wh, ww) of positive ints, got (8.5, 8): 8.5 (float) is not an int"),
    ],
)
def test_moat_arguments_are_not_truncated(kwargs, error, message):
    with raises_exactly(error, message):
        moat_config(**kwargs)
    with raises_exactly(error, message):
        build_model(**kwargs)
    if "split_head" not in kwargs:
        with raises_exactly(error, message):
            build_reference_model(**kwargs)


def test_moat_takes_numpy_ints_and_stores_python_ints():
    config = moat_config(shape=np.array([1, 3, 64, 64]), output_stride=np.int64(16), num_classes=np.int32(5))
    assert config.image_size == (64, 64) and config.output_stride == 16 and config.num_classes == 5
    assert all(type(v) is int for v in (*config.image_size, config.output_stride, config.num_classes))
    assert get_stage_strides(np.int64(8)) == (2, 2, 1, 1)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(image_size=224.0), TypeError,
         "image_size must be a positive int or a pair (H, W) of positive ints, got 224.0 (float)"),
        (dict(image_size=(224, 224.5)), TypeError,
         "image_size must be a positive int or a pair (H, W) of positive ints, got (224, 224.5): 224.5 (float) is not an int"),
        (dict(image_size=True), TypeError,
         "image_size must be a positive int or a pair (H, W) of positive ints, got True (bool)"),
        (dict(num_classes=10.0), TypeError, "num_classes must be a positive int, or None for features; got 10.0 (float)"),
        (dict(split_head="False"), TypeError, "split_head must be True or False, got 'False' (str)"),
    ],
)
def test_deit_arguments(kwargs, error, message):
    with raises_exactly(error, message):
        build_deit(**kwargs)


def test_deit_config_fields():
    with raises_exactly(TypeError, "patch_size must be a positive int, got 16.0 (float)"):
        DeiTConfig(name="x", patch_size=16.0)
    with raises_exactly(TypeError, "qkv_bias must be True or False, got 'yes' (str)"):
        DeiTConfig(name="x", qkv_bias="yes")

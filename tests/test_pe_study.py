import pytest
import torch

from ane_vit import PEType, WindowAttention
from ane_vit.pe_study import (
    PE_COLORS,
    consts_of_shape,
    fill_like_trained,
    largest_const,
    pe_footprint,
    position_parameter_count,
    rpe_bias_nbytes,
)


@pytest.mark.parametrize("window", [(4, 4), (8, 6), (7, 7)])
@pytest.mark.parametrize("pe_type", list(PEType))
def test_position_parameter_count(pe_type, window):
    dim, heads = 48, 3
    attn = WindowAttention(dim, window, heads, pe_type=pe_type)
    wh, ww = window
    table_rows = (2 * wh - 1) * (2 * ww - 1)
    conv = 9 * dim + dim  # 3x3 depthwise weights + bias
    expected = {
        PEType.RPE: table_rows * heads,
        PEType.SINGLE_HEAD_RPE: table_rows,
        PEType.LePE_ADD: wh * ww * dim + conv,
        PEType.LePE_FUSED: conv,
        PEType.NONE: 0,
    }[pe_type]
    assert position_parameter_count(attn) == expected
    # the rest (q, k, v, proj) does not depend on the position embedding
    rest = sum(p.numel() for p in attn.parameters()) - position_parameter_count(attn)
    assert rest == 4 * (dim * dim + dim)


def test_position_parameter_count_rejects_other_modules():
    with pytest.raises(TypeError, match="expected a WindowAttention, got Linear"):
        position_parameter_count(torch.nn.Linear(2, 2))


def test_rpe_bias_nbytes_matches_the_gathered_bias():
    attn = WindowAttention(32, (4, 6), 4, pe_type=PEType.RPE)
    bias = attn.position_bias().detach()  # (h, N_k, 1, N_q)
    assert rpe_bias_nbytes((4, 6), 4, bytes_per_value=4) == bias.numel() * bias.element_size()
    assert rpe_bias_nbytes((4, 6), 4) == bias.numel() * 2  # float16


@pytest.mark.parametrize(
    "args, message",
    [
        (((8,), 2), "window_size must be a pair"),
        (((0, 8), 2), r"window_size must be a pair \(wh, ww\) of positive ints, got \(0, 8\): 0 is not positive"),
        (((8, 8), 0), "num_heads must be a positive int, got 0"),
        (((8, 8), 2, 3), "bytes_per_value must be 2 .* or 4 .*, got 3"),
    ],
)
def test_rpe_bias_nbytes_errors(args, message):
    with pytest.raises(ValueError, match=message):
        rpe_bias_nbytes(*args)


def test_fill_like_trained_is_seeded_and_nonzero():
    a = fill_like_trained(WindowAttention(16, (4, 4), 2, pe_type=PEType.LePE_ADD), seed=1)
    b = fill_like_trained(WindowAttention(16, (4, 4), 2, pe_type=PEType.LePE_ADD), seed=1)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
        assert pa.abs().min() > 0, f"{name} still holds zeros"
    with pytest.raises(ValueError, match="std must be positive"):
        fill_like_trained(a, std=0.0)


def test_pe_colors_are_distinct_and_complete():
    assert set(PE_COLORS) == set(PEType)
    assert len(set(PE_COLORS.values())) == len(PE_COLORS)


def test_const_helpers_need_a_program():
    with pytest.raises(ValueError, match="no MIL program"):
        consts_of_shape(object(), (1,))
    with pytest.raises(ValueError, match="no MIL program"):
        largest_const(object())


@pytest.mark.slow
def test_conversion_folds_the_rpe_bias_into_a_heads_x_n_x_n_constant():
    window, heads = (8, 8), 2
    none = pe_footprint(PEType.NONE, window, dim=32, num_heads=heads, save=False)
    rpe = pe_footprint(PEType.RPE, window, dim=32, num_heads=heads)
    single = pe_footprint(PEType.SINGLE_HEAD_RPE, window, dim=32, num_heads=heads, save=False)
    # the table has 15*15*2 parameters; the program stores the gathered 2 x 64 x 64 bias
    assert rpe.position_parameters == 15 * 15 * heads
    assert rpe.weight_bytes - none.weight_bytes == rpe_bias_nbytes(window, heads)
    assert single.weight_bytes - none.weight_bytes == rpe_bias_nbytes(window, 1)
    assert rpe.package_bytes > rpe.weight_bytes
    assert rpe.largest_const_shape == (64, 1, 64)  # one (N_k, 1, N_q) bias per head


@pytest.mark.slow
def test_the_folded_constant_is_the_gathered_bias_in_float16():
    from ane_vit.export import to_mlprogram

    attn = fill_like_trained(WindowAttention(32, (4, 6), 2, pe_type=PEType.RPE), std=1.0).eval()
    mlmodel = to_mlprogram(attn, torch.zeros(1, 24, 32))
    found = consts_of_shape(mlmodel, (24, 1, 24))
    bias = attn.position_bias().detach()  # (h, N_k, 1, N_q)
    assert len(found) == 2
    for h, const in enumerate(found):
        assert torch.equal(torch.from_numpy(const), bias[h].half())


@pytest.mark.slow
def test_lepe_fused_program_does_not_grow_with_the_window():
    small = pe_footprint(PEType.LePE_FUSED, (4, 4), dim=32, num_heads=2, save=False)
    large = pe_footprint(PEType.LePE_FUSED, (12, 12), dim=32, num_heads=2, save=False)
    assert small.parameters == large.parameters
    assert small.weight_bytes == large.weight_bytes
    # LePE_ADD stores its absolute table: N*C float16 values more at the larger window
    add_small = pe_footprint("LePE_ADD", (4, 4), dim=32, num_heads=2, save=False)
    add_large = pe_footprint("LePE_ADD", (12, 12), dim=32, num_heads=2, save=False)
    assert add_large.weight_bytes - add_small.weight_bytes == (144 - 16) * 32 * 2


def test_pe_footprint_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pe_type must be one of"):
        pe_footprint("ALIBI", (4, 4))
    with pytest.raises(ValueError, match="num_heads must be a positive int that divides dim"):
        pe_footprint(PEType.NONE, (4, 4), dim=64, num_heads=3)

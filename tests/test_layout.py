import pytest
import torch

from ane_vit import (
    bc1s_to_bnc,
    bc1s_to_nchw,
    bnc_to_bc1s,
    dense_nbytes,
    nchw_to_bc1s,
    padded_nbytes,
)
from ane_vit.layout import padded_last_axis


def test_bnc_round_trip_and_shapes():
    x = torch.randn(2, 7, 5)
    y = bnc_to_bc1s(x)
    assert y.shape == (2, 5, 1, 7)
    assert torch.equal(y[1, 3, 0], x[1, :, 3])
    assert torch.equal(bc1s_to_bnc(y), x)


def test_nchw_round_trip():
    x = torch.randn(2, 3, 4, 5)
    y = nchw_to_bc1s(x)
    assert y.shape == (2, 3, 1, 20)
    assert torch.equal(bc1s_to_nchw(y, 4, 5), x)


@pytest.mark.parametrize("fn, bad", [(bnc_to_bc1s, torch.zeros(2, 3)), (bc1s_to_bnc, torch.zeros(2, 3, 2, 4))])
def test_layout_errors_name_the_shape(fn, bad):
    with pytest.raises(ValueError, match=r"\(B, "):
        fn(bad)


def test_bc1s_to_nchw_rejects_wrong_size():
    with pytest.raises(ValueError, match="4\\*5=20"):
        bc1s_to_nchw(torch.zeros(1, 3, 1, 21), 4, 5)


@pytest.mark.parametrize(
    "length, dtype, expected",
    [(1, "fp16", 32), (32, "fp16", 32), (33, "fp16", 64), (1, "fp32", 16), (17, "fp32", 32), (0, "fp16", 0)],
)
def test_padded_last_axis(length, dtype, expected):
    assert padded_last_axis(length, dtype) == expected


def test_padded_bytes_waste():
    # (1, 64, 1, 1) in fp16: each of 64 channels holds one value in a 64-byte line.
    assert dense_nbytes((1, 64, 1, 1)) == 128
    assert padded_nbytes((1, 64, 1, 1)) == 64 * 64
    # A last axis that is a multiple of 32 fp16 values wastes nothing.
    assert padded_nbytes((1, 64, 1, 256)) == dense_nbytes((1, 64, 1, 256))


def test_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype"):
        padded_nbytes((1, 2), "fp8")


def test_moves_last_axis():
    from ane_vit.layout import moves_last_axis

    # transposes: only the permutation's last entry matters
    assert moves_last_axis((1, 8, 4, 16), (1, 8, 16, 4), perm=(0, 1, 3, 2))
    assert not moves_last_axis((1, 8, 4, 16), (1, 4, 8, 16), perm=(0, 2, 1, 3))
    assert not moves_last_axis((2, 3, 5), (3, 2, 5), perm=(1, 0, -1))  # negative axes count too
    # reshapes: rows merged or split move it; regrouping the outer axes keeps it
    assert moves_last_axis((1, 8, 4, 16), (1, 8, 1, 64))
    assert moves_last_axis((1, 8, 1, 64), (1, 8, 4, 16))
    assert not moves_last_axis((1, 8, 4, 16), (1, 32, 16))
    assert not moves_last_axis((1, 8, 4, 16), (1, 8, 1, 4, 16))
    # slices and concats along the last axis change its length
    assert moves_last_axis((1, 8, 1, 64), (1, 8, 1, 32))
    assert not moves_last_axis((1, 8, 1, 64), (1, 4, 1, 64))
    assert not moves_last_axis((), ())
    with pytest.raises(ValueError, match=r"perm must be a permutation of range\(3\), got \[0, 0, 2\]"):
        moves_last_axis((1, 2, 3), (1, 2, 3), perm=(0, 0, 2))

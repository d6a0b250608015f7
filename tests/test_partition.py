import pytest
import torch

from ane_vit import window_partition, window_partition_nchw, window_reverse, window_reverse_nchw
from ane_vit.reference import window_partition_6d, window_reverse_6d


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("H, W, window", [(16, 16, (8, 8)), (12, 16, (4, 8)), (12, 16, (6, 4)), (14, 14, (7, 7)), (8, 8, (8, 8))])
def test_partition_equals_6d_and_round_trips(B, H, W, window):
    x = torch.randn(B, H, W, 5)
    windows = window_partition(x, window)
    nW = (H // window[0]) * (W // window[1])
    assert windows.shape == (B * nW, window[0], window[1], 5)
    assert torch.equal(windows, window_partition_6d(x, window))
    assert torch.equal(window_reverse(windows, window, H, W), x)
    flat = windows.reshape(B * nW, window[0] * window[1], 5)
    assert torch.equal(window_reverse(flat, window, H, W), x)
    assert torch.equal(window_reverse_6d(windows, window, H, W), x)


def test_window_content_is_the_right_patch():
    x = torch.arange(2 * 4 * 6).reshape(2, 4, 6, 1).float()
    windows = window_partition(x, (2, 3))  # 2 x 2 windows per image
    # image 1, window row 1, window column 0 -> index 1*4 + 1*2 + 0
    assert torch.equal(windows[6], x[1, 2:4, 0:3])


def test_no_intermediate_above_rank_5(monkeypatch):
    ranks = []
    original = torch.Tensor.reshape

    def spy(self, *shape):
        out = original(self, *shape)
        ranks.append(out.dim())
        return out

    monkeypatch.setattr(torch.Tensor, "reshape", spy)
    x = torch.randn(2, 12, 16, 3)
    window_reverse(window_partition(x, (4, 8)), (4, 8), 12, 16)
    assert ranks and max(ranks) <= 5


@pytest.mark.parametrize("window", [(5, 8), (8, 5), (0, 8)])
def test_window_that_does_not_divide(window):
    with pytest.raises(ValueError, match=r"window_size|positive"):
        window_partition(torch.zeros(1, 16, 16, 4), window)


def test_partition_error_names_the_shapes():
    with pytest.raises(ValueError, match=r"does not divide the feature map \(16, 12\)"):
        window_partition(torch.zeros(1, 16, 12, 4), (8, 8))


def test_partition_wrong_rank():
    with pytest.raises(ValueError, match=r"\(B, H, W, C\), got \(16, 16, 4\)"):
        window_partition(torch.zeros(16, 16, 4), (8, 8))


def test_reverse_wrong_window_shape():
    with pytest.raises(ValueError, match="do not match window_size"):
        window_reverse(torch.zeros(4, 8, 4, 3), (8, 8), 16, 16)


def test_reverse_wrong_window_count():
    with pytest.raises(ValueError, match="not a multiple of the 4 windows"):
        window_reverse(torch.zeros(3, 64, 3), (8, 8), 16, 16)


# ---- windows laid along axis 2 of a channels-first map: (B, C, H, W) -> (B, C, nW, N)


@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize(
    "H, W, window",
    # (16, 8): a window spans the width (the reshape-only case); (8, 16): it spans the height only
    [(16, 16, (8, 8)), (12, 16, (4, 8)), (12, 16, (6, 4)), (8, 8, (8, 8)), (16, 8, (8, 8)), (8, 16, (8, 8))],
)
def test_nchw_partition_is_the_channels_last_one_with_channels_first(B, H, W, window):
    x = torch.randn(B, 5, H, W)
    windows = window_partition_nchw(x, window)
    nW, N = (H // window[0]) * (W // window[1]), window[0] * window[1]
    assert windows.shape == (B, 5, nW, N)
    tokens = window_partition_6d(x.permute(0, 2, 3, 1), window).reshape(B, nW, N, 5)  # (B, nW, N, C)
    assert torch.equal(windows, tokens.permute(0, 3, 1, 2))  # same windows, same token order
    assert torch.equal(window_reverse_nchw(windows, window, H, W), x)


def test_nchw_window_content_is_the_right_patch():
    x = torch.arange(2 * 3 * 4 * 6).reshape(2, 3, 4, 6).float()
    windows = window_partition_nchw(x, (2, 3))  # 2 x 2 windows per image
    # image 1, window row 1, window column 0 -> window 2; its tokens row-major
    assert torch.equal(windows[1, :, 2], x[1, :, 2:4, 0:3].reshape(3, 6))


def test_nchw_path_never_above_rank_5(monkeypatch):
    ranks = []
    original = torch.Tensor.reshape

    def spy(self, *shape):
        out = original(self, *shape)
        ranks.append(out.dim())
        return out

    monkeypatch.setattr(torch.Tensor, "reshape", spy)
    x = torch.randn(2, 3, 12, 16)
    window_reverse_nchw(window_partition_nchw(x, (4, 8)), (4, 8), 12, 16)
    assert ranks and max(ranks) <= 5


def test_nchw_errors():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\), got \(16, 16, 4\)"):
        window_partition_nchw(torch.zeros(16, 16, 4), (8, 8))
    with pytest.raises(ValueError, match=r"does not divide the feature map \(16, 12\)"):
        window_partition_nchw(torch.zeros(1, 4, 16, 12), (8, 8))
    with pytest.raises(ValueError, match=r"expects windows of shape \(B, C, 4, 64\).*got \(1, 4, 2, 64\)"):
        window_reverse_nchw(torch.zeros(1, 4, 2, 64), (8, 8), 16, 16)

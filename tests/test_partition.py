import pytest
import torch

from ane_vit import window_partition, window_reverse
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

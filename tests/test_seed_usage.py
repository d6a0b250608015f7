"""The seed README's attention example, with ane_vit names, gives the shapes it promises."""

import torch

from ane_vit import PEType, WindowAttention, window_partition, window_reverse


def test_seed_readme_attention_example():
    H, W, C = 16, 16, 32
    num_heads = 2
    window_size = (8, 8)
    x = torch.rand((1, H, W, C))
    window_attention = WindowAttention(
        dim=C, window_size=window_size, num_heads=num_heads, split_head=True, pe_type=PEType.SINGLE_HEAD_RPE
    )
    windows = window_partition(x, window_size)
    assert windows.shape == (4, 8, 8, C)
    windows_reshape = windows.reshape((-1, window_size[0] * window_size[1], C))
    attn_windows = window_attention(windows_reshape)
    assert attn_windows.shape == (4, 64, C)
    output = window_reverse(attn_windows, window_size, H, W)
    assert output.shape == (1, H, W, C)

    global_attention = WindowAttention(
        dim=C, window_size=(H, W), num_heads=num_heads, split_head=True, pe_type=PEType.SINGLE_HEAD_RPE
    )
    global_reshape = x.reshape(1, H * W, C)
    global_output = global_attention(global_reshape)
    assert global_output.shape == (1, H * W, C)

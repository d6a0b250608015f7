import pytest
import torch

from ane_vit import (
    PEType,
    WindowAttention,
    assert_parity,
    port_attention_weights,
    window_partition,
    window_reverse,
)
from ane_vit.reference import ReferenceWindowAttention, window_partition_6d

ALL_PE = list(PEType)


def _randomize(module, std=0.2):
    # Non-trivial weights everywhere (abs_pe and biases start at zero otherwise).
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def _pair(dim, window, heads, pe_type, split_head):
    ref = _randomize(ReferenceWindowAttention(dim, window, heads, pe_type=pe_type)).eval()
    ane = port_attention_weights(ref, WindowAttention(dim, window, heads, pe_type=pe_type, split_head=split_head)).eval()
    return ref, ane


@pytest.mark.parametrize("pe_type", ALL_PE)
@pytest.mark.parametrize("split_head", [True, False])
@pytest.mark.parametrize("window, heads", [((8, 8), 2), ((4, 6), 4), ((7, 7), 3)])
def test_window_attention_matches_reference(pe_type, split_head, window, heads):
    ref, ane = _pair(48, window, heads, pe_type, split_head)
    x = torch.randn(5, window[0] * window[1], 48)
    with torch.no_grad():
        report = assert_parity(ref(x), ane(x), atol=1e-5)
    assert report.psnr_db > 100


@pytest.mark.parametrize("pe_type", ALL_PE)
@pytest.mark.parametrize("split_head", [True, False])
def test_global_attention_on_a_partitioned_map_matches_reference(pe_type, split_head):
    H, W, C = 16, 12, 64
    x = torch.randn(2, H, W, C)
    # local: windows of the map, ANE partition vs 6-D partition
    ref, ane = _pair(C, (8, 6), 2, pe_type, split_head)
    with torch.no_grad():
        out_ane = window_reverse(ane(window_partition(x, (8, 6)).reshape(-1, 48, C)), (8, 6), H, W)
        out_ref = window_reverse(ref(window_partition_6d(x, (8, 6)).reshape(-1, 48, C)), (8, 6), H, W)
    assert_parity(out_ref, out_ane, atol=1e-5)
    # global: the window is the whole map
    ref, ane = _pair(C, (H, W), 2, pe_type, split_head)
    tokens = x.reshape(2, H * W, C)
    with torch.no_grad():
        assert_parity(ref(tokens), ane(tokens), atol=1e-5)


@pytest.mark.parametrize("pe_type", ALL_PE)
def test_split_and_fused_paths_agree_and_differ_in_graph(pe_type):
    split = _randomize(WindowAttention(64, (8, 8), 4, pe_type=pe_type, split_head=True)).eval()
    fused = WindowAttention(64, (8, 8), 4, pe_type=pe_type, split_head=False).eval()
    fused.load_state_dict(split.state_dict())
    x = torch.randn(3, 64, 64)
    with torch.no_grad():
        assert_parity(split(x), fused(x), atol=1e-5)
    # split_head really switches paths: the split path runs one softmax per head.
    calls = []
    handle = torch.Tensor.softmax

    def spy(self, *a, **k):
        calls.append(tuple(self.shape))
        return handle(self, *a, **k)

    torch.Tensor.softmax = spy
    try:
        with torch.no_grad():
            split(x)
            n_split = len(calls)
            calls.clear()
            fused(x)
            n_fused = len(calls)
    finally:
        torch.Tensor.softmax = handle
    assert (n_split, n_fused) == (4, 1)


@pytest.mark.parametrize("pe_type", ALL_PE)
@pytest.mark.parametrize("split_head", [True, False])
def test_float16_against_float32(pe_type, split_head):
    layer = WindowAttention(64, (8, 8), 2, pe_type=pe_type, split_head=split_head)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in ("abs_pe", "relative_position_bias_table"):
                p.normal_(0, 0.02)
    layer = layer.eval()
    x = torch.randn(4, 64, 64)
    with torch.no_grad():
        ref = layer(x)
        half = layer.half()(x.half())
    assert half.dtype == torch.float16
    assert_parity(ref, half.float(), min_psnr=60)


def test_rpe_has_one_table_column_per_head():
    rpe = WindowAttention(64, (8, 8), 4, pe_type=PEType.RPE)
    single = WindowAttention(64, (8, 8), 4, pe_type=PEType.SINGLE_HEAD_RPE)
    assert rpe.relative_position_bias_table.shape == (15 * 15, 4)
    assert single.relative_position_bias_table.shape == (15 * 15, 1)
    # heads really get different biases
    bias = rpe.position_bias()
    assert bias.shape == (4, 64, 1, 64)
    assert not torch.allclose(bias[0], bias[1])


def test_input_is_not_modified_in_place():
    layer = _randomize(WindowAttention(32, (4, 4), 1, pe_type=PEType.LePE_ADD))
    x = torch.randn(2, 16, 32)
    before = x.clone()
    layer(x)
    assert torch.equal(x, before)


def test_lepe_fused_is_not_a_no_op():
    layer = _randomize(WindowAttention(32, (4, 4), 2, pe_type=PEType.LePE_FUSED)).eval()
    plain = WindowAttention(32, (4, 4), 2, pe_type=PEType.NONE).eval()
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("lepe")})
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        assert not torch.allclose(layer(x), plain(x))
    assert not hasattr(layer, "abs_pe")
    # its parameters do not grow with the window, unlike LePE_ADD's absolute table
    big = WindowAttention(32, (16, 16), 2, pe_type=PEType.LePE_FUSED)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(big) == count(layer)


def test_pe_type_accepts_names():
    assert WindowAttention(32, (4, 4), 1, pe_type="RPE").pe_type is PEType.RPE
    assert WindowAttention(32, (4, 4), 1, pe_type="PEType.SINGLE_HEAD_RPE").pe_type is PEType.SINGLE_HEAD_RPE


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=32, window_size=(4, 4), num_heads=3), "divides dim=32"),
        (dict(dim=32, window_size=(4,), num_heads=1), "pair"),
        (dict(dim=32, window_size=(4, 4), num_heads=1, pe_type="ALiBi"), "pe_type must be one of"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowAttention(**kwargs)


def test_forward_error_names_expected_shape():
    layer = WindowAttention(32, (4, 4), 1)
    with pytest.raises(ValueError, match=r"\(B\*nW, 16, 32\), got \(2, 15, 32\)"):
        layer(torch.zeros(2, 15, 32))
    with pytest.raises(ValueError, match=r"\(B\*nW, N, C\), got \(16, 32\)"):
        layer(torch.zeros(16, 32))


def test_port_refuses_mismatched_layers():
    ref = ReferenceWindowAttention(32, (4, 4), 2, pe_type=PEType.RPE)
    with pytest.raises(ValueError, match="differ in pe_type"):
        port_attention_weights(ref, WindowAttention(32, (4, 4), 2, pe_type=PEType.LePE_ADD))


@pytest.mark.parametrize("pe_type", ALL_PE)
def test_forward_bc1s_equals_forward_on_tokens(pe_type):
    layer = _randomize(WindowAttention(32, (4, 4), 2, pe_type=pe_type)).eval()
    x = torch.randn(3, 16, 32)
    with torch.no_grad():
        tokens = layer(x)
        bc1s = layer.forward_bc1s(x.permute(0, 2, 1).unsqueeze(2))  # (B, C, 1, N)
    assert bc1s.shape == (3, 32, 1, 16)
    assert torch.equal(bc1s.squeeze(2).permute(0, 2, 1), tokens)
    with pytest.raises(ValueError, match=r"\(B, 32, 1, 16\), got \(3, 16, 32\)"):
        layer.forward_bc1s(x)


@pytest.mark.parametrize("split_head", [True, False])
@pytest.mark.parametrize("pe_type", list(PEType))
def test_windows_along_axis_2_are_attended_one_by_one(pe_type, split_head):
    # (B, C, nW, N): each window on axis 2 must give what the layer gives that window alone
    layer = _randomize(WindowAttention(32, (2, 4), 2, pe_type=pe_type, split_head=split_head)).eval()
    x = torch.randn(2, 32, 3, 8)  # (B, C, nW, N)
    with torch.no_grad():
        out = layer.forward_bc1s(x)
        one_by_one = torch.stack([layer.forward_bc1s(x[:, :, w : w + 1]) for w in range(3)], dim=2)
    assert out.shape == (2, 32, 3, 8)
    assert_parity(one_by_one.squeeze(3), out, atol=1e-5)


def toy_seed_position_bias(seed_table, window_size):
    """The seed's bias, written out: score (q, k) gets seed_table[pos(k) - pos(q)]."""
    wh, ww = window_size
    pos = [(r, c) for r in range(wh) for c in range(ww)]
    n = len(pos)
    bias = torch.empty(seed_table.shape[2], n, n)  # (h, N_q, N_k)
    for q, (rq, cq) in enumerate(pos):
        for k, (rk, ck) in enumerate(pos):
            bias[:, q, k] = seed_table[rk - rq + wh - 1, ck - cq + ww - 1]
    return bias


@pytest.mark.parametrize("window, heads", [((4, 4), 1), ((3, 5), 2)])
def test_seed_rpe_table_loads_flipped(window, heads):
    from ane_vit.port import seed_rpe_table_to_ane

    seed_table = torch.randn(2 * window[0] - 1, 2 * window[1] - 1, heads)
    layer = WindowAttention(32, window, 2, pe_type=PEType.RPE if heads > 1 else PEType.SINGLE_HEAD_RPE)
    converted = seed_rpe_table_to_ane(seed_table)
    with torch.no_grad():
        layer.relative_position_bias_table.copy_(converted)
    ours = layer.position_bias().squeeze(2).transpose(1, 2)  # (h, N_k, 1, N_q) -> (h, N_q, N_k)
    assert torch.equal(ours, toy_seed_position_bias(seed_table, window))
    # loading the seed's table without the flip gives a different bias
    assert not torch.equal(seed_table.reshape(-1, heads), converted)
    with pytest.raises(ValueError, match="odd sides"):
        seed_rpe_table_to_ane(torch.zeros(4, 7, 1))

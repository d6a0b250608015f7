"""record_intermediates: what a forward pass produces, with dense and 64-byte padded sizes."""

import pytest
import torch
from torch import nn

from ane_vit import WindowAttention, port_attention_weights
from ane_vit.intermediates import TensorRecord, largest_intermediate, record_intermediates
from ane_vit.layout import padded_nbytes
from ane_vit.reference import ReferenceWindowAttention, window_partition_6d


def _attention_pair(num_heads=4, dim=32, window=(4, 4), pe_type="RPE", split_head=True):
    ref = ReferenceWindowAttention(dim, window, num_heads, pe_type=pe_type).eval()
    ane = WindowAttention(dim, window, num_heads, split_head=split_head, pe_type=pe_type).eval()
    return ref, port_attention_weights(ref, ane)


def test_records_ops_in_order_with_shapes_and_bytes():
    x = torch.randn(2, 3, 5)
    records = record_intermediates(lambda t: (t * 2).permute(0, 2, 1).unsqueeze(2), x)
    assert [r.op for r in records] == ["mul", "permute", "unsqueeze"]
    assert [r.shape for r in records] == [(2, 3, 5), (2, 5, 3), (2, 5, 1, 3)]
    assert [r.index for r in records] == [0, 1, 2]
    last = records[-1]
    assert last.rank == 4 and last.dtype == "float32"
    assert last.dense_nbytes == 2 * 5 * 3 * 2  # fp16 by default
    assert last.padded_nbytes == 2 * 5 * 1 * 64  # last axis of 3 fp16 values takes a 64-byte line
    assert last.padding_overhead == pytest.approx(64 / 6)


def test_dtype_sets_the_element_size_of_floating_tensors_only():
    x = torch.randn(4, 8)
    (fp32,) = record_intermediates(torch.neg, x, dtype="fp32")
    (own,) = record_intermediates(torch.neg, x, dtype=None)
    assert fp32.dense_nbytes == own.dense_nbytes == 4 * 8 * 4
    assert fp32.padded_nbytes == padded_nbytes((4, 8), "fp32")
    (idx,) = record_intermediates(torch.argmax, x, dim=1)  # int64 keeps its 8 bytes
    assert idx.dtype == "int64" and idx.dense_nbytes == 4 * 8


def test_views_and_identities():
    x = torch.randn(2, 6)
    records = record_intermediates(lambda t: nn.functional.dropout(t.reshape(3, 4), training=False).exp(), x)
    assert [(r.op, r.is_view) for r in records] == [("reshape", True), ("exp", False)]  # eval dropout adds nothing
    fresh = record_intermediates(lambda t: t.reshape(3, 4).exp(), x, include_views=False)
    assert [r.op for r in fresh] == ["exp"]


def test_constants_are_flagged():
    ref, _ = _attention_pair()
    records = record_intermediates(ref, torch.randn(2, 16, 32))
    constant_ops = [r.op for r in records if r.constant]
    assert "getitem" in constant_ops  # the bias gathered from its table depends on parameters only
    dynamic = record_intermediates(ref, torch.randn(2, 16, 32), include_constants=False)
    assert dynamic and not any(r.constant for r in dynamic)
    assert len(dynamic) == len(records) - len(constant_ops)


def test_recording_does_not_change_the_result():
    ref, ane = _attention_pair()
    x = torch.randn(3, 16, 32)
    with torch.no_grad():
        expected = ane(x)
    records = record_intermediates(ane, x)
    assert records[-1].shape == (3, 16, 32)
    with torch.no_grad():
        assert torch.equal(ane(x), expected)


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_split_softmax_keeps_one_bk1q_score_tensor_per_head(num_heads):
    b, n = 3, 16
    ref, split = _attention_pair(num_heads=num_heads)
    _, fused = _attention_pair(num_heads=num_heads, split_head=False)
    x = torch.randn(b, n, 32)
    soft = {
        name: [r.shape for r in record_intermediates(m, x) if r.op == "softmax"]
        for name, m in (("ref", ref), ("split", split), ("fused", fused))
    }
    assert soft["ref"] == [(b, num_heads, n, n)]
    assert soft["fused"] == [(b, num_heads, n, n)]
    assert soft["split"] == [(b, n, 1, n)] * num_heads
    largest_split = largest_intermediate(record_intermediates(split, x, include_constants=False), padded=False)
    largest_ref = largest_intermediate(record_intermediates(ref, x, include_constants=False), padded=False)
    if num_heads > 1:
        assert largest_split.dense_nbytes < largest_ref.dense_nbytes


def test_six_d_partition_is_seen_at_rank_6():
    records = record_intermediates(window_partition_6d, torch.randn(2, 8, 8, 3), (4, 4))
    assert max(r.rank for r in records) == 6
    assert records[-1].shape == (8, 4, 4, 3)


def test_largest_intermediate_padded_vs_dense():
    records = [
        TensorRecord(0, "a", (1, 100), "float32", False, False, 200, 256),
        TensorRecord(1, "b", (150, 1), "float32", False, False, 300, 150 * 64),
    ]
    assert largest_intermediate(records).op == "b"
    assert largest_intermediate(records, padded=False).op == "b"
    assert largest_intermediate(records[:1]).op == "a"
    with pytest.raises(ValueError, match="empty"):
        largest_intermediate([])


def test_argument_errors():
    with pytest.raises(TypeError, match="callable, got int"):
        record_intermediates(3, torch.zeros(1))
    with pytest.raises(ValueError, match="got 'fp8'"):
        record_intermediates(torch.neg, torch.zeros(1), dtype="fp8")
    with pytest.raises(ValueError, match="positive, got 0"):
        record_intermediates(torch.neg, torch.zeros(1), dtype=0)

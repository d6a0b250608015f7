"""The ANE MOAT computes the same function as the plain reference MOAT once the reference
weights are ported: fp32, relative error <= 1e-4 on every stage."""

import pytest
import torch

from ane_vit import PEType, assert_parity
from ane_vit.moat import build_model
from ane_vit.port.moat import port_moat_weights
from ane_vit.reference.moat import ReferenceMOAT, build_reference_model
from ane_vit.testing import randomize_


def _pair(num_classes=None, split_head=True, **kwargs):
    _, ref = build_reference_model((1, 3, 256, 256), num_classes=num_classes, **kwargs)
    _, ane = build_model((1, 3, 256, 256), split_head=split_head, num_classes=num_classes, **kwargs)
    ref = randomize_(ref).eval()
    return ref, port_moat_weights(ref, ane).eval()


def _relative_errors(ref_outs, ane_outs):
    return [float((r - a).abs().max() / r.abs().max()) for r, a in zip(ref_outs, ane_outs)]


@pytest.mark.parametrize("attention_mode", ["global", "local"])
@pytest.mark.parametrize("base_arch", ["tiny-moat-0", "tiny-moat-1"])
def test_ported_ane_moat_matches_the_reference(base_arch, attention_mode):
    ref, ane = _pair(base_arch=base_arch, attention_mode=attention_mode)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref_outs, ane_outs = ref(x), ane(x)
    assert_parity(ref_outs, ane_outs)  # same number and shapes of outputs
    errors = _relative_errors(ref_outs, ane_outs)
    assert max(errors) <= 1e-4, errors
    # the check can fail: one changed weight breaks parity
    with torch.no_grad():
        ane.stages[3][1].attention.proj.weight.mul_(1.1)
        assert _relative_errors(ref_outs, ane(x))[3] > 1e-3


@pytest.mark.parametrize("pe_type", [PEType.RPE, PEType.SINGLE_HEAD_RPE, PEType.LePE_FUSED])
def test_parity_with_other_position_embeddings_and_the_fused_softmax(pe_type):
    ref, ane = _pair(pe_type=pe_type, split_head=False, num_blocks=(1, 1, 2, 1), attention_mode="local")
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert max(_relative_errors(ref(x), ane(x))) <= 1e-4


@pytest.mark.parametrize("local_layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("pe_type", [PEType.SINGLE_HEAD_RPE, PEType.LePE_ADD])
def test_both_local_layouts_match_the_reference_within_1e_5(local_layout, pe_type):
    # batch 2 and 8x8 windows: four windows per image in stage 3, one in stage 4
    kwargs = dict(attention_mode="local", local_window_size=(8, 8), pe_type=pe_type, num_blocks=(1, 1, 2, 1))
    _, ref = build_reference_model((2, 3, 256, 256), **kwargs)
    _, ane = build_model((2, 3, 256, 256), local_layout=local_layout, **kwargs)
    ref = randomize_(ref, seed=1).eval()
    ane = port_moat_weights(ref, ane).eval()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        report = assert_parity(ref(x), ane(x), atol=1e-5)
    assert report.psnr_db > 120


def test_parity_of_the_classifier_head():
    ref, ane = _pair(num_classes=7, num_blocks=(1, 1, 1, 1))
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        r, a = ref(x), ane(x)
    assert r.shape == a.shape == (2, 7)
    assert float((r - a).abs().max() / r.abs().max()) <= 1e-4


def test_reference_counts_equal_the_ane_counts():
    with torch.device("meta"):
        _, ref = build_reference_model(attention_mode="local")
        _, ane = build_model(attention_mode="local")
    assert isinstance(ref, ReferenceMOAT)
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ane.parameters()) == 2_904_600


def test_port_rejects_mismatched_configs_and_types():
    with torch.device("meta"):
        _, ref = build_reference_model(attention_mode="local")
        _, ane = build_model(attention_mode="global")
        _, ane_split = build_model(attention_mode="local", split_head=False)
    with pytest.raises(ValueError, match="attention_mode: 'local' != 'global'"):
        port_moat_weights(ref, ane)
    with pytest.raises(TypeError, match=r"expected \(ReferenceMOAT, MOAT\)"):
        port_moat_weights(ane, ref)
    port_moat_weights(ref, ane_split)  # split_head may differ: same function

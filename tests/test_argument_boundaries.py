"""Checks at the boundaries of public functions that nothing else exercises: a wrong channel
count in attention, zero sizes in export, and ports between layers or models that differ."""

import pytest
import torch
from torch import nn

from ane_vit import PEType, WindowAttention
from ane_vit.export import default_filename, main
from ane_vit.moat import build_model
from ane_vit.port import linear_to_conv1x1, port_moat_weights
from ane_vit.reference.moat import build_reference_model


def test_attention_rejects_a_wrong_channel_count():
    layer = WindowAttention(32, (4, 4), 2)
    with pytest.raises(ValueError, match=r"\(B\*nW, 16, 32\), got \(2, 16, 24\)"):
        layer(torch.zeros(2, 16, 24))


@pytest.mark.parametrize("shape", [(1, 3, 0, 256), (0, 3, 256, 256)])
def test_zero_sizes_are_rejected_before_anything_is_built(shape, capsys):
    cfg = {"base_arch": "tiny-moat-0", "attention_mode": "global", "pe_type": "RPE", "split_head": True}
    with pytest.raises(ValueError, match="positive"):
        default_filename(cfg, shape)
    argv = ["--dry-run", "--shape", *(str(s) for s in shape)]
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert capsys.readouterr().out == ""  # no file listed


def test_port_needs_matching_bias_presence():
    with_bias, without = nn.Conv2d(4, 3, 1), nn.Conv2d(4, 3, 1, bias=False)
    weight = torch.randn(3, 4)
    with pytest.raises(ValueError, match="bias presence differs"):
        linear_to_conv1x1(weight, with_bias, None)  # the conv would keep a stale bias
    with pytest.raises(ValueError, match="bias presence differs"):
        linear_to_conv1x1(weight, without, torch.randn(3))
    linear_to_conv1x1(weight, without, None)
    assert torch.equal(without.weight[:, :, 0, 0], weight)


@pytest.mark.parametrize(
    "ref_kwargs, ane_kwargs, field",
    [
        (dict(pe_type=PEType.RPE), dict(pe_type=PEType.LePE_ADD), "pe_type"),
        (dict(base_arch="tiny-moat-0"), dict(base_arch="tiny-moat-1"), "base_arch"),
        (dict(num_classes=None), dict(num_classes=10), "num_classes"),
    ],
)
def test_port_moat_refuses_other_configs(ref_kwargs, ane_kwargs, field):
    with torch.device("meta"):
        _, ref = build_reference_model(attention_mode="local", **ref_kwargs)
        _, ane = build_model(attention_mode="local", **ane_kwargs)
    with pytest.raises(ValueError, match=rf"configs differ: .*{field}: "):
        port_moat_weights(ref, ane)


@pytest.mark.parametrize(
    "name, member",
    [("lepe_add", PEType.LePE_ADD), ("PEType.single_head_rpe", PEType.SINGLE_HEAD_RPE), ("rpe", PEType.RPE), ("None", PEType.NONE)],
)
def test_pe_type_names_are_case_insensitive(name, member):
    assert WindowAttention(32, (4, 4), 2, pe_type=name).pe_type is member


def test_bytes_per_element_of_mil_dtypes():
    pytest.importorskip("coremltools")
    from ane_vit.analysis.program import _dtype_bytes

    expected = {"fp16": 2, "fp32": 4, "int32": 4, "int8": 1, "uint8": 1, "bool": 1, "int4": 0.5, "uint4": 0.5, "uint2": 0.25}
    assert {name: _dtype_bytes(name) for name in expected} == expected

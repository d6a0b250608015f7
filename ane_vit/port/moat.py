"""Port a reference MOAT's weights into the ANE MOAT.

The stem and the MBConv layers are the same modules on both sides (copied as they are,
batch-norm running statistics included); each attention layer goes through
``port_attention_weights``; the LayerNorms keep their ``(C,)`` weight and bias; the
classifier's ``nn.Linear`` becomes a 1x1 conv.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from ..moat import MOAT
from ..reference.moat import ReferenceMOAT
from .attention import linear_to_conv1x1, port_attention_weights

__all__ = ["port_moat_weights"]

# split_head and local_layout change how the ANE model computes, not what: free to differ.
_IGNORED_FIELDS = {"split_head", "local_layout"}


@torch.no_grad()
def port_moat_weights(reference: ReferenceMOAT, ane: MOAT) -> MOAT:
    """Copy every weight and buffer of ``reference`` into ``ane``; returns ``ane``.

    Raises:
        TypeError: if the models are not a ``ReferenceMOAT`` and a ``MOAT``.
        ValueError: if their configs differ (other than ``split_head``), naming the fields.
    """
    if not isinstance(reference, ReferenceMOAT) or not isinstance(ane, MOAT):
        raise TypeError(
            f"expected (ReferenceMOAT, MOAT), got ({type(reference).__name__}, {type(ane).__name__})"
        )
    diff = [
        f"{f.name}: {getattr(reference.config, f.name)!r} != {getattr(ane.config, f.name)!r}"
        for f in fields(reference.config)
        if f.name not in _IGNORED_FIELDS and getattr(reference.config, f.name) != getattr(ane.config, f.name)
    ]
    if diff:
        raise ValueError("reference and ANE MOAT configs differ: " + "; ".join(diff))
    ane.stem.load_state_dict(reference.stem.state_dict())
    for ref_blocks, ane_blocks in zip(reference.stages, ane.stages):
        for ref_block, ane_block in zip(ref_blocks, ane_blocks):
            if not hasattr(ref_block, "attention"):  # an MBConv stage: identical modules
                ane_block.load_state_dict(ref_block.state_dict())
                continue
            ane_block.mbconv.load_state_dict(ref_block.mbconv.state_dict())
            ane_block.attn_norm.weight.copy_(ref_block.attn_norm.weight)
            ane_block.attn_norm.bias.copy_(ref_block.attn_norm.bias)
            port_attention_weights(ref_block.attention, ane_block.attention)
    if reference.head is not None:
        ane.head.norm.weight.copy_(reference.head.norm.weight)
        ane.head.norm.bias.copy_(reference.head.norm.bias)
        linear_to_conv1x1(reference.head.fc.weight, ane.head.fc, reference.head.fc.bias)
    return ane

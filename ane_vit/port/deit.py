"""Port a ``ReferenceDeiT``'s weights into a ``DeiTANE``.

Every weight is copied as is or reshaped, no arithmetic: linear layers become 1x1
convolutions, the fused qkv is split into q, k and v, and the class token and position
embedding move from the token layout ``(1, N, C)`` to the ANE layout ``(1, C, 1, N)``.
"""

from __future__ import annotations

import torch

from ..deit import DeiTANE
from ..reference.deit import ReferenceDeiT
from .attention import linear_to_conv1x1, port_attention_weights

__all__ = ["port_deit_weights"]


@torch.no_grad()
def port_deit_weights(reference: ReferenceDeiT, ane: DeiTANE) -> DeiTANE:
    """Load a ``ReferenceDeiT``'s weights into a ``DeiTANE``; returns ``ane``.

    Both must have the same config, image size and head (``num_classes``); ``split_head``
    of the ANE model does not matter (it changes the computation, not the weights).
    Raises ``TypeError`` for other model types and ``ValueError`` naming the first
    difference.

    Shapes: ``cls_token (1, 1, C) -> (1, C, 1, 1)``, ``pos_embed (1, N, C) -> (1, C, 1, N)``
    """
    if not isinstance(reference, ReferenceDeiT) or not isinstance(ane, DeiTANE):
        raise TypeError(
            f"port_deit_weights expects (ReferenceDeiT, DeiTANE), got ({type(reference).__name__}, {type(ane).__name__})"
        )
    for attr in ("config", "image_size", "num_classes"):
        if getattr(reference, attr) != getattr(ane, attr):
            raise ValueError(
                f"reference and ANE DeiT differ in {attr}: {getattr(reference, attr)!r} != {getattr(ane, attr)!r}"
            )
    ane.patch_embed.load_state_dict(reference.patch_embed.proj.state_dict())  # the same conv in both
    ane.cls_token.copy_(reference.cls_token.permute(0, 2, 1).unsqueeze(2))  # (1, 1, C) -> (1, C, 1, 1)
    ane.pos_embed.copy_(reference.pos_embed.permute(0, 2, 1).unsqueeze(2))  # (1, N, C) -> (1, C, 1, N)
    for ref_block, ane_block in zip(reference.blocks, ane.blocks):
        ane_block.norm1.load_state_dict(ref_block.norm1.state_dict())  # weight, bias: (C,) in both
        port_attention_weights(ref_block.attn, ane_block.attn)
        ane_block.norm2.load_state_dict(ref_block.norm2.state_dict())
        linear_to_conv1x1(ref_block.mlp.fc1.weight, ane_block.mlp.fc1, ref_block.mlp.fc1.bias)
        linear_to_conv1x1(ref_block.mlp.fc2.weight, ane_block.mlp.fc2, ref_block.mlp.fc2.bias)
    ane.norm.load_state_dict(reference.norm.state_dict())
    if reference.head is not None:
        linear_to_conv1x1(reference.head.weight, ane.head, reference.head.bias)
    return ane

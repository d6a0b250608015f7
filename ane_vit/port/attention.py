"""Port reference attention weights into ``WindowAttention``."""

from __future__ import annotations

import torch
from torch import nn

from ..attention import WindowAttention
from ..reference.attention import ReferenceWindowAttention

__all__ = ["linear_to_conv1x1", "port_attention_weights", "seed_rpe_table_to_ane"]


@torch.no_grad()
def linear_to_conv1x1(linear_weight: torch.Tensor, conv: nn.Conv2d, bias: torch.Tensor | None = None) -> None:
    """Copy a linear weight ``(out, in)`` (and bias) into a 1x1 conv ``(out, in, 1, 1)``."""
    expected = tuple(conv.weight.shape[:2])
    if tuple(linear_weight.shape) != expected or tuple(conv.weight.shape[2:]) != (1, 1):
        raise ValueError(
            f"cannot copy a linear weight of shape {tuple(linear_weight.shape)} into a conv "
            f"of weight shape {tuple(conv.weight.shape)}; expected ({expected[0]}, {expected[1]}) -> (out, in, 1, 1)"
        )
    conv.weight.copy_(linear_weight.reshape(conv.weight.shape))  # (out, in) -> (out, in, 1, 1)
    if (bias is None) != (conv.bias is None):
        raise ValueError("bias presence differs between the linear and the conv layer")
    if bias is not None:
        conv.bias.copy_(bias)


@torch.no_grad()
def port_attention_weights(reference: ReferenceWindowAttention, ane: WindowAttention) -> WindowAttention:
    """Load a ``ReferenceWindowAttention``'s weights into a ``WindowAttention``; returns ``ane``.

    Both must agree on ``dim``, ``window_size``, ``num_heads`` and ``pe_type``.
    """
    for attr in ("dim", "window_size", "num_heads", "pe_type"):
        if getattr(reference, attr) != getattr(ane, attr):
            raise ValueError(
                f"reference and ANE attention differ in {attr}: {getattr(reference, attr)!r} != {getattr(ane, attr)!r}"
            )
    c = reference.dim
    w, b = reference.qkv.weight, reference.qkv.bias  # (3C, C), (3C,)
    for i, conv in enumerate((ane.q_proj, ane.k_proj, ane.v_proj)):
        linear_to_conv1x1(w[i * c : (i + 1) * c], conv, None if b is None else b[i * c : (i + 1) * c])
    linear_to_conv1x1(reference.proj.weight, ane.proj, reference.proj.bias)
    for name in ("relative_position_bias_table", "abs_pe"):
        if hasattr(reference, name):
            getattr(ane, name).copy_(getattr(reference, name))
    if hasattr(reference, "lepe"):
        ane.lepe.load_state_dict(reference.lepe.state_dict())
    return ane


def seed_rpe_table_to_ane(table: torch.Tensor) -> torch.Tensor:
    """Convert a relative-position table of the seed (``ml-vision-transformers-ane``) to ours.

    The seed adds ``table[pos(k) - pos(q)]`` to the score of query ``q`` and key ``k``;
    ``ane_vit`` (like Swin) adds ``table[pos(q) - pos(k)]``. The offset changes sign, which
    on the ``(2wh-1, 2ww-1)`` grid of offsets is a flip of both axes.

    Shapes: ``table: (2wh-1, 2ww-1, h)`` (the seed's parameter) ``-> ((2wh-1)*(2ww-1), h)``,
    ready for ``WindowAttention.relative_position_bias_table``.
    """
    if not isinstance(table, torch.Tensor) or table.dim() != 3:
        shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise ValueError(f"expected the seed's table of shape (2wh-1, 2ww-1, heads), got {shape}")
    if table.shape[0] % 2 == 0 or table.shape[1] % 2 == 0:
        raise ValueError(f"a table of offsets has odd sides (2wh-1, 2ww-1), got {tuple(table.shape)}")
    return table.flip(0, 1).reshape(-1, table.shape[2])  # (2wh-1, 2ww-1, h) -> ((2wh-1)*(2ww-1), h)

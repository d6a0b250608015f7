"""Plain PyTorch implementations, written the way common vision-transformer code is.

They are the ground truth of the book: tokens ``(B, N, C)``, ``nn.Linear`` projections
with a fused qkv, one softmax over all heads, a per-head relative-position bias gathered
from a table, and the 6-D (Swin) window partition. The ANE versions in ``ane_vit`` are
tested to compute the same function (see ``ane_vit.port`` to copy weights across).
"""

from .attention import ReferenceWindowAttention, window_partition_6d, window_reverse_6d
from .deit import ReferenceDeiT, ReferenceDeiTBlock
from .moat import ReferenceMOAT, build_reference_model

__all__ = [
    "ReferenceWindowAttention",
    "window_partition_6d",
    "window_reverse_6d",
    "ReferenceDeiT",
    "ReferenceDeiTBlock",
    "ReferenceMOAT",
    "build_reference_model",
]

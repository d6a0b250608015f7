"""Compress a converted ML Program's weights (``coremltools.optimize.coreml``) and its command line.

* ``methods``: ``palettize``, ``quantize_int8``, ``quantize_int4_block``, ``prune_magnitude``,
  ``prune_n_m`` (each returns a new ``MLModel`` that records what was done in its metadata),
  ``compression_record``, ``weight_sparsity`` and the OS each method needs (``METHOD_TARGETS``);
* ``activations``: ``quantize_activations`` (W8A8: int8 activations calibrated with
  ``ane_vit.interpret``, the Linux stand-in for Core ML's predict-based calibration);
* ``cli``: ``python -m ane_vit.compress IN.mlpackage --palettize 4 -o OUT.mlpackage``.

Everything here runs on Linux; running a compressed program needs macOS (or
``ane_vit.interpret``, which expands the ``constexpr_*`` ops with numpy). See
``notebooks/08_real_data_and_compression.ipynb``.
"""

from __future__ import annotations

from .activations import activation_ranges, quantize_activations
from .cli import main
from .methods import (
    METHOD_TARGETS,
    PALETTE_BITS,
    WEIGHT_THRESHOLD,
    compression_record,
    palettize,
    prune_magnitude,
    prune_n_m,
    quantize_int4_block,
    quantize_int8,
    record_summary,
    weight_sparsity,
)

__all__ = [
    "METHOD_TARGETS",
    "PALETTE_BITS",
    "WEIGHT_THRESHOLD",
    "palettize",
    "quantize_int8",
    "quantize_int4_block",
    "prune_magnitude",
    "prune_n_m",
    "compression_record",
    "record_summary",
    "weight_sparsity",
    "activation_ranges",
    "quantize_activations",
    "main",
]

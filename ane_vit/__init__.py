"""ane_vit: attention-based vision transformers laid out for the Apple Neural Engine.

The book (``notebooks/``) explains each piece; this package is the code the book builds
and that you can import in your own work. Heavy dependencies (coremltools) are imported
only by the functions that need them.

The folders are the architecture:

* layers and models, laid out for the ANE: ``layout``, ``partition``, ``attention``,
  ``norm``, ``layers``, ``moat``, ``deit``;
* ``reference/``: plain implementations of the same models (the ground truth of the tests),
  and ``port/``: weight ports from the references (and the seed) to the ANE models;
* the Core ML family, each a subpackage with its command line in ``__main__.py``:
  ``export/`` (convert and save), ``analysis/`` (what a program contains),
  ``interpret/`` (run a program with numpy), and ``device`` (Mac only: latency, compute plan);
* ``compress/``: weight compression and W8A8 of a converted program (``python -m ane_vit.compress``);
* ``digits/``: a micro-moat trained on scikit-learn's digits, its accuracy at every stage
  (``python -m ane_vit.digits``);
* ``bench/``: ANE vs reference, side by side (``python -m ane_vit.bench``);
* helpers for the book and tests: ``intermediates``, ``pe_study``, ``notebook``,
  ``plotting``, ``testing``, ``stats`` (intervals and exact paired tests for accuracies).
"""

from .attention import PEType, WindowAttention, relative_position_index
from .deit import DEIT_CONFIGS, DEIT_TINY, DeiTANE, DeiTConfig, build_deit
from .intermediates import TensorRecord, largest_intermediate, record_intermediates
from .layers import MBConv
from .layout import (
    bc1s_to_bnc,
    bc1s_to_nchw,
    bnc_to_bc1s,
    dense_nbytes,
    nchw_to_bc1s,
    padded_nbytes,
)
from .moat import ARCHITECTURES, MOAT, MOATConfig, build_model
from .norm import LayerNormANE
from .partition import window_partition, window_partition_nchw, window_reverse, window_reverse_nchw
from .port import port_attention_weights
from .testing import assert_parity, check_shape, max_abs_error, psnr

__version__ = "0.1.0"

__all__ = [
    "PEType",
    "WindowAttention",
    "relative_position_index",
    "window_partition",
    "window_reverse",
    "window_partition_nchw",
    "window_reverse_nchw",
    "bnc_to_bc1s",
    "bc1s_to_bnc",
    "nchw_to_bc1s",
    "bc1s_to_nchw",
    "padded_nbytes",
    "dense_nbytes",
    "port_attention_weights",
    "assert_parity",
    "check_shape",
    "max_abs_error",
    "psnr",
    "build_model",
    "MOATConfig",
    "MOAT",
    "ARCHITECTURES",
    "MBConv",
    "LayerNormANE",
    "DeiTConfig",
    "DeiTANE",
    "DEIT_TINY",
    "DEIT_CONFIGS",
    "build_deit",
    "TensorRecord",
    "record_intermediates",
    "largest_intermediate",
    "__version__",
]

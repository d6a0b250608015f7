"""Weight compression of a converted ML Program, over ``coremltools.optimize.coreml``.

Each function takes a ``coremltools`` ``MLModel`` (or the path of a ``.mlpackage``) and returns
a new compressed ``MLModel`` whose metadata records what was done (``ane_vit.compression``,
a JSON string). The compressed weights become ``constexpr_*`` ops that the runtime expands
when it loads the model (``ane_vit.interpret`` runs them too):

=====================  ==========================================  ======================
method                 op in the program                            needs
=====================  ==========================================  ======================
palettize, per tensor  ``constexpr_lut_to_dense`` (1/2/4/6/8 bits)   iOS 16 / macOS 13
palettize, grouped     ``constexpr_lut_to_dense`` (iOS18 version)    iOS 18 / macOS 15
int8 per channel       ``constexpr_affine_dequantize``               iOS 16 / macOS 13
int4 per block         ``constexpr_blockwise_shift_scale``           iOS 18 / macOS 15
magnitude / n:m prune  ``constexpr_sparse_to_dense``                 iOS 16 / macOS 13
W8A8 (activations)     ``quantize`` / ``dequantize``                 iOS 17 / macOS 14
=====================  ==========================================  ======================

Every method takes ``weight_threshold`` (default 2,048, coremltools' own): constants with that
many elements or fewer stay float16. In a small model they are a visible share of the file;
lower the threshold to compress them too (rank-1 constants and those under 10 elements are
never compressed by coremltools).

A method that needs iOS 18 must be given a program converted with
``minimum_deployment_target="iOS18"`` (coremltools cannot raise the target of a converted
program); ``compress`` says so in its error.

Pitfall worked around (coremltools 9.0 + numpy 2): ``OpMagnitudePrunerConfig(target_sparsity=...)``
on a float16 program prunes nothing: numpy < 2.4 computes ``np.percentile``'s index
``(n - 1) * q`` in the array's dtype, and ``n - 1`` rounds to infinity in float16 from 65,520
on, so the threshold of a float16 weight of 65,521 elements or more is NaN (numpy issue 29003,
fixed in 2.4.0 by PR 29105). ``prune_magnitude`` computes each weight's threshold in float32
itself and prunes with ``OpThresholdPrunerConfig``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import numpy as np

__all__ = [
    "PALETTE_BITS",
    "METHOD_TARGETS",
    "palettize",
    "quantize_int8",
    "quantize_int4_block",
    "prune_magnitude",
    "prune_n_m",
    "compression_record",
    "record_summary",
    "weight_sparsity",
]

#: Bit widths of ``palettize`` (the per-tensor look-up tables of iOS 16).
PALETTE_BITS = (1, 2, 4, 6, 8)
#: Minimum deployment target of each method (the first OS release that has its ops).
METHOD_TARGETS = {
    "palettize": "iOS16",
    "palettize-grouped": "iOS18",
    "int8": "iOS16",
    "int4-block": "iOS18",
    "prune": "iOS16",
    "prune-n:m": "iOS16",
    "w8a8": "iOS17",
}
#: coremltools compresses only constants with more elements than this (its default).
WEIGHT_THRESHOLD = 2048


def _check_threshold(weight_threshold) -> None:
    """``weight_threshold``: compress only constants with MORE elements than this (coremltools' default 2,048).

    Whatever the threshold, coremltools 9.0 never compresses a constant of rank <= 1 (biases,
    norm scales and shifts, batch-norm statistics) nor one of fewer than 10 elements (stored in
    the program description, not in ``weight.bin``).
    """
    if isinstance(weight_threshold, bool) or not isinstance(weight_threshold, int) or weight_threshold < 0:
        raise ValueError(f"weight_threshold must be an int >= 0 (elements), got {weight_threshold!r}")


def _threshold_record(weight_threshold: int) -> dict:
    """The record entry of a non-default threshold (the default is not written, as before)."""
    return {} if weight_threshold == WEIGHT_THRESHOLD else {"weight_threshold": weight_threshold}
_RECORD_KEY = "ane_vit.compression"


def _load(model):
    os.environ.setdefault("TQDM_DISABLE", "1")
    import coremltools as ct

    if isinstance(model, (str, os.PathLike)):
        if not os.path.exists(model):
            raise ValueError(f"no such .mlpackage: {os.fspath(model)!r}")
        return ct.models.MLModel(os.fspath(model), skip_model_load=True)
    if not isinstance(model, ct.models.MLModel):
        raise TypeError(f"model must be a coremltools MLModel or a path to an .mlpackage, got {type(model).__name__}")
    return model


def _opset(model) -> int:
    return int(model.get_spec().specificationVersion)


_SPEC_OF_TARGET = {"iOS16": 7, "iOS17": 8, "iOS18": 9}


def _require_target(model, method: str) -> None:
    target = METHOD_TARGETS[method]
    if _opset(model) < _SPEC_OF_TARGET[target]:
        raise ValueError(
            f"{method} needs a program converted for {target} or later (macOS {13 + int(target[3:]) - 16}); this one "
            f"has specification version {_opset(model)}: re-export it with minimum_deployment_target={target!r}"
        )


def _run(fn: Callable, model, config, method: str, params: dict, record_extra: dict | None = None):
    """Apply a coremltools compression function quietly and record it in the metadata."""
    import coremltools as ct

    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)  # one warning per skipped small constant otherwise
    try:
        out = fn(model, config)
    finally:
        logger.setLevel(level)
    record = {"method": method, **params, "minimum_target": METHOD_TARGETS[method], "coremltools": ct.__version__}
    record.update(record_extra or {})
    meta = dict(model.user_defined_metadata)
    meta[_RECORD_KEY] = json.dumps(record)
    for key, value in meta.items():
        out.user_defined_metadata[key] = value
    for attr in ("author", "license", "version"):
        setattr(out, attr, getattr(model, attr))
    out.short_description = f"{model.short_description} Compressed: {record_summary(record)}.".strip()
    return out


def record_summary(record: dict) -> str:
    """One line for a compression record, e.g. ``palettize 4 bits (k-means, per tensor)``."""
    if "weight_threshold" in record:  # a threshold other than coremltools' default
        rest = {k: v for k, v in record.items() if k != "weight_threshold"}
        return f"{record_summary(rest)}, constants > {record['weight_threshold']:,} elements"
    m = record["method"]
    if m.startswith("palettize"):
        group = f"groups of {record['group_size']} channels" if record.get("group_size") else "per tensor"
        return f"palettize {record['nbits']} bits (k-means, {group})"
    if m == "int8":
        return "int8 weights (linear symmetric, per channel)"
    if m == "int4-block":
        return f"int4 weights (linear symmetric, blocks of {record['block_size']})"
    if m == "prune":
        return f"magnitude pruning to {record['sparsity']:.0%} sparsity"
    if m == "prune-n:m":
        return f"{record['n']}:{record['m']} pruning"
    return m


def compression_record(model) -> dict | None:
    """What ``ane_vit.compress`` recorded in a program's metadata, or ``None``."""
    model = _load(model)
    text = model.user_defined_metadata.get(_RECORD_KEY)
    return json.loads(text) if text else None


def palettize(model, nbits: int, group_size: int | None = None, weight_threshold: int = WEIGHT_THRESHOLD):
    """k-means palettization: each weight becomes an index into a table of ``2**nbits`` values.

    ``group_size=None``: one table per tensor (iOS 16). ``group_size=G``: one table per group
    of ``G`` output channels (iOS 18; the program must target iOS 18). ``weight_threshold``:
    only constants with more elements are compressed (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    model = _load(model)
    _check_threshold(weight_threshold)
    if nbits not in PALETTE_BITS:
        raise ValueError(f"nbits must be one of {PALETTE_BITS}, got {nbits!r}")
    if group_size is None:
        op = cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", granularity="per_tensor", weight_threshold=weight_threshold)
        method = "palettize"
    else:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive int, got {group_size!r}")
        method = "palettize-grouped"
        _require_target(model, method)
        op = cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", granularity="per_grouped_channel", group_size=group_size,
                                    weight_threshold=weight_threshold)
    return _run(cto.palettize_weights, model, cto.OptimizationConfig(global_config=op), method,
                {"nbits": nbits, "group_size": group_size}, _threshold_record(weight_threshold))


def quantize_int8(model, weight_threshold: int = WEIGHT_THRESHOLD):
    """Linear symmetric int8 weights with one scale per output channel (iOS 16).

    ``weight_threshold``: only constants with more elements are compressed (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    model = _load(model)
    _check_threshold(weight_threshold)
    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                     weight_threshold=weight_threshold)
    return _run(cto.linear_quantize_weights, model, cto.OptimizationConfig(global_config=op), "int8", {"nbits": 8},
                _threshold_record(weight_threshold))


def quantize_int4_block(model, block_size: int = 32, weight_threshold: int = WEIGHT_THRESHOLD):
    """Linear symmetric int4 weights with one scale per block of ``block_size`` input channels (iOS 18).

    ``weight_threshold``: only constants with more elements are compressed (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    model = _load(model)
    _check_threshold(weight_threshold)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    _require_target(model, "int4-block")
    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=block_size,
                                     weight_threshold=weight_threshold)
    return _run(cto.linear_quantize_weights, model, cto.OptimizationConfig(global_config=op), "int4-block",
                {"nbits": 4, "block_size": block_size}, _threshold_record(weight_threshold))


def _prunable_consts(model, weight_threshold: int = WEIGHT_THRESHOLD) -> list:
    """The const ops coremltools' pruner would consider: float tensors > ``weight_threshold`` elements, used by an op."""
    from ..interpret import load_program

    func = load_program(model).functions["main"]
    found = []
    for op in func.operations:
        if op.op_type != "const":
            continue
        val = op.outputs[0].val
        if not isinstance(val, np.ndarray) or val.size <= weight_threshold or val.dtype.kind != "f":
            continue
        if any(op.outputs[0].child_ops):
            found.append(op)
    return found


def prune_magnitude(model, sparsity: float, weight_threshold: int = WEIGHT_THRESHOLD):
    """Zero the ``sparsity`` share of smallest-magnitude entries of every large weight (iOS 16).

    Each weight's threshold is the ``sparsity`` quantile of its absolute values computed in
    float32, applied with ``OpThresholdPrunerConfig``: coremltools 9.0's own
    ``target_sparsity`` calls ``np.percentile`` on the float16 weight, whose index arithmetic
    overflows (NaN) from 65,521 elements on, and then prunes nothing. ``weight_threshold``: only
    constants with more elements are pruned (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    model = _load(model)
    _check_threshold(weight_threshold)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be a number strictly between 0 and 1, got {sparsity!r}")
    configs = {}
    for op in _prunable_consts(model, weight_threshold):
        magnitude = np.abs(op.outputs[0].val.astype(np.float32))
        threshold = float(np.quantile(magnitude, sparsity, method="lower"))  # an entry of the tensor
        configs[op.name] = cto.OpThresholdPrunerConfig(
            threshold=max(threshold, 1e-12), minimum_sparsity_percentile=0.0, weight_threshold=weight_threshold
        )
    if not configs:
        raise ValueError(f"the program has no weight with more than {weight_threshold} elements to prune")
    return _run(cto.prune_weights, model, cto.OptimizationConfig(op_name_configs=configs), "prune",
                {"sparsity": float(sparsity)}, {"threshold": "per weight, float32 quantile", **_threshold_record(weight_threshold)})


def prune_n_m(model, n: int = 2, m: int = 4, weight_threshold: int = WEIGHT_THRESHOLD):
    """Structured n:m pruning: in every block of ``m`` input channels, the ``n`` smallest are zero (iOS 16).

    ``weight_threshold``: only constants with more elements are pruned (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    model = _load(model)
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise ValueError(f"n:m needs integers 0 < n < m, got {n}:{m}")
    _check_threshold(weight_threshold)
    op = cto.OpMagnitudePrunerConfig(n_m_ratio=(n, m), weight_threshold=weight_threshold)
    return _run(cto.prune_weights, model, cto.OptimizationConfig(global_config=op), "prune-n:m", {"n": n, "m": m},
                _threshold_record(weight_threshold))


def weight_sparsity(model) -> float:
    """Share of zeros among the weights stored sparse (``constexpr_sparse_to_dense``), 0 if none.

    Counts from the program's masks (both the iOS 16 and the iOS 18 op), so it measures what
    the file holds, not what was asked for.
    """
    from ..interpret import load_program

    func = load_program(_load(model)).functions["main"]
    zeros = total = 0
    for op in func.operations:
        if op.op_type != "constexpr_sparse_to_dense":
            continue
        shape = op.outputs[0].shape
        size = int(np.prod(shape))
        mask = op.inputs["mask"].val
        if tuple(mask.shape) == tuple(shape):  # iOS18: a 0/1 mask of the weight's shape
            nonzero = int(np.count_nonzero(mask))
        else:  # iOS16: a flat mask packed 8 positions per byte
            nonzero = int(np.unpackbits(mask.astype(np.uint8), bitorder="little")[:size].sum())
        zeros += size - nonzero
        total += size
    return zeros / total if total else 0.0

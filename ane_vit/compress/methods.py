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

A method that needs iOS 18 must be given a program converted with
``minimum_deployment_target="iOS18"`` (coremltools cannot raise the target of a converted
program); ``compress`` says so in its error.

Nothing silent: every method first refuses a program with a non-finite weight (NaN or
infinity would become NaN scales, tables or thresholds) and a program with nothing it could
compress (no float weight of more than ``weight_threshold`` elements, e.g. one already
compressed). coremltools skips a weight a setting does not fit (a group size or block size
that does not divide its channels, n:m with ``m`` over half of them) with a log line and
goes on; here its skips are collected, the weights actually compressed are counted in the
result, and a method that compressed none of them raises ``ValueError`` with coremltools'
reasons. The record says how many weights (constants and elements) were compressed.

Every method takes ``weight_threshold`` (default 2,048, coremltools' own): constants with that
many elements or fewer stay float16. In a small model they are a visible share of the file;
lower the threshold to compress them too (rank-1 constants and those under 10 elements are
never compressed by coremltools).

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Real

import numpy as np

from .._checks import positive_int

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
    "weights_summary",
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


def _check_threshold(weight_threshold) -> int:
    """``weight_threshold``: compress only constants with MORE elements than this (coremltools' default 2,048).

    Whatever the threshold, coremltools 9.0 never compresses a constant of rank <= 1 (biases,
    norm scales and shifts, batch-norm statistics) nor one of fewer than 10 elements (stored in
    the program description, not in ``weight.bin``). Numpy integers are accepted.
    """
    ok = isinstance(weight_threshold, (int, np.integer)) and not isinstance(weight_threshold, (bool, np.bool_))
    if not ok or weight_threshold < 0:
        raise ValueError(f"weight_threshold must be an int >= 0 (elements), got {weight_threshold!r}")
    return int(weight_threshold)


def _threshold_record(weight_threshold: int) -> dict:
    """The record entry of a non-default threshold (the default is not written, as before)."""
    return {} if weight_threshold == WEIGHT_THRESHOLD else {"weight_threshold": weight_threshold}
_RECORD_KEY = "ane_vit.compression"


def _load(model):
    """An ``MLModel`` (returned as is) or a saved ``.mlpackage`` path, read by ``ane_vit.interpret.load_mlmodel``
    (its errors name the file: not a program, missing or truncated weights...)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    import coremltools as ct

    if isinstance(model, (str, os.PathLike)):
        from ..interpret import load_mlmodel

        return load_mlmodel(model)
    if not isinstance(model, ct.models.MLModel):
        raise TypeError(f"model must be a coremltools MLModel or a path to an .mlpackage, got {type(model).__name__}")
    return model


def _source(given) -> str:
    return repr(os.fspath(given)) if isinstance(given, (str, os.PathLike)) else "the program"


@dataclass(frozen=True)
class _Weight:
    name: str
    shape: tuple[int, ...]
    size: int


@dataclass(frozen=True)
class _Weights:
    """What a method may compress in one program: its float weights of rank >= 2 and more than ``threshold`` elements."""

    source: str
    candidates: tuple[_Weight, ...]
    constexpr_ops: int  # weights the program already stores compressed
    threshold: int = WEIGHT_THRESHOLD

    @property
    def names(self) -> frozenset[str]:
        return frozenset(w.name for w in self.candidates)


def _float_consts(func) -> Iterator[tuple[object, np.ndarray]]:
    """Every float ``const`` op of ``func`` that feeds another op, with its value."""
    for op in func.operations:
        if op.op_type != "const":
            continue
        val = op.outputs[0].val
        if isinstance(val, np.ndarray) and val.dtype.kind == "f" and any(op.outputs[0].child_ops):
            yield op, val


def _weights(model, given, threshold: int = WEIGHT_THRESHOLD) -> _Weights:
    """Check ``model`` before compressing it: every float weight finite, something to compress.

    Raises ``ValueError`` naming the weights that hold NaN or infinity (they would turn int8
    scales, k-means tables and magnitude thresholds into NaN), or saying that no weight can be
    compressed (none above the size ``threshold``: already compressed, or too small; coremltools
    never compresses a rank-1 constant, so those are not candidates).
    """
    from ..interpret import load_program

    func = load_program(model).functions["main"]
    source = _source(given)
    bad, candidates = [], []
    for op, val in _float_consts(func):
        finite = np.isfinite(val)
        if not finite.all():
            bad.append(f"{op.name} {tuple(val.shape)}: {int(np.isnan(val).sum())} NaN, {int(np.isinf(val).sum())} infinite")
        if val.size > threshold and val.ndim > 1:
            candidates.append(_Weight(op.name, tuple(int(d) for d in val.shape), int(val.size)))
    if bad:
        listed = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ValueError(f"{source} has {len(bad)} weight(s) with NaN or infinite values ({listed}): compressing them "
                         "would write a program of NaN; fix the weights (a diverged training?) and export again")
    constexpr = sum(1 for op in func.operations if op.op_type.startswith("constexpr_"))
    if not candidates:
        why = (f"it already stores {constexpr} weight(s) compressed (constexpr_* ops)" if constexpr
               else "coremltools leaves smaller weights uncompressed")
        raise ValueError(f"{source} has no float weight of more than {threshold:,} elements to compress: {why}")
    return _Weights(source, tuple(candidates), constexpr, threshold)


@contextmanager
def _coremltools_log(records: list[str]) -> Iterator[None]:
    """Collect (and keep off the terminal) coremltools' log lines: its per-weight "Skipped" notes.

    Most come from the ``coremltools`` logger; ``coremltools.optimize._utils`` logs on the
    root logger (its block-size checks), so records from coremltools files are taken there too.
    """
    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    def from_coremltools(record: logging.LogRecord) -> bool:
        if f"{os.sep}coremltools{os.sep}" in record.pathname and record.levelno >= logging.WARNING:
            records.append(record.getMessage())
            return False
        return True

    logger, root = logging.getLogger("coremltools"), logging.getLogger()
    saved = logger.level, logger.propagate, list(logger.handlers)
    logger.handlers, logger.propagate = [_Collect(logging.WARNING)], False
    logger.setLevel(logging.WARNING)
    root.addFilter(from_coremltools)
    try:
        yield
    finally:
        root.removeFilter(from_coremltools)
        logger.setLevel(saved[0])
        logger.propagate, logger.handlers = saved[1], saved[2]


def _compressed(out, weights: _Weights) -> list[_Weight]:
    """The candidate weights that ``out`` no longer stores as plain ``const`` ops (coremltools
    replaces each compressed one by ``constexpr_*`` ops)."""
    from ..interpret import load_program

    still = {op.name for op, _ in _float_consts(load_program(out).functions["main"])}
    return [w for w in weights.candidates if w.name not in still]


def _skip_reasons(records: list[str]) -> str:
    """coremltools' distinct reasons for skipping weights, the generic "Skipped this op" lines left out."""
    specific = [r for r in records if not r.startswith(("Cannot perform", "op named "))] or records
    reasons = list(dict.fromkeys(r.strip() for r in specific))
    return "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "") if reasons else \
        "it gave no reason"


def _opset(model) -> int:
    return int(model.get_spec().specificationVersion)


_SPEC_OF_TARGET = {"iOS16": 7, "iOS17": 8, "iOS18": 9}


def _require_target(model, method: str) -> None:
    target = METHOD_TARGETS[method]
    if _opset(model) < _SPEC_OF_TARGET[target]:
        raise ValueError(
            f"{method} needs a program converted for {target} or later (macOS {13 + int(target[3:]) - 16}); this one "
            f"has specification version {_opset(model)}: re-export it with `python -m ane_vit.export ... "
            f"--deployment-target {target}` (in Python: minimum_deployment_target={target!r})"
        )


def _run(fn: Callable, model, config, method: str, params: dict, record_extra: dict | None = None,
         weights: _Weights | None = None, require_weights: bool = True):
    """Apply a coremltools compression function quietly, check what it did, record it in the metadata.

    ``weights`` (from ``_weights``) are what the method could compress; with ``require_weights``
    a result that compressed none of them raises ``ValueError`` with coremltools' reasons.
    """
    import coremltools as ct

    weights = weights if weights is not None else _weights(model, model)
    records: list[str] = []
    with _coremltools_log(records):
        out = fn(model, config)
    done = _compressed(out, weights)
    record = {"method": method, **params, "minimum_target": METHOD_TARGETS[method], "coremltools": ct.__version__}
    if require_weights and not done:
        raise ValueError(
            f"{record_summary(record)} compresses none of the {len(weights.candidates)} weight(s) of {weights.source} "
            f"that it could take (float, more than {weights.threshold:,} elements), so it is refused: coremltools "
            f"skipped each one ({_skip_reasons(records)})")
    record["weights_compressed"] = len(done)
    record["weights_considered"] = len(weights.candidates)
    record["elements_compressed"] = sum(w.size for w in done)
    record["elements_considered"] = sum(w.size for w in weights.candidates)
    record.update(record_extra or {})
    meta = dict(model.user_defined_metadata)
    meta[_RECORD_KEY] = json.dumps(record)
    for key, value in meta.items():
        out.user_defined_metadata[key] = value
    for attr in ("author", "license", "version"):
        setattr(out, attr, getattr(model, attr))
    out.short_description = f"{model.short_description} Compressed: {record_summary(record)}.".strip()
    return out


def weights_summary(record: dict) -> str:
    """How many weights a compression record says were compressed, e.g. ``2 of 2 weights (73,728 of 73,728 values)``."""
    if "weights_compressed" not in record:
        return "weights compressed: not recorded"
    return (f"{record['weights_compressed']} of {record['weights_considered']} weights "
            f"({record['elements_compressed']:,} of {record['elements_considered']:,} values) compressed")


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


def _bits(nbits) -> int:
    if isinstance(nbits, (bool, np.bool_)) or not isinstance(nbits, (int, np.integer)) or int(nbits) not in PALETTE_BITS:
        raise ValueError(f"nbits must be one of {PALETTE_BITS}, got {nbits!r}")
    return int(nbits)


def palettize(model, nbits: int, group_size: int | None = None, weight_threshold: int = WEIGHT_THRESHOLD):
    """k-means palettization: each weight becomes an index into a table of ``2**nbits`` values.

    ``group_size=None``: one table per tensor (iOS 16). ``group_size=G``: one table per group
    of ``G`` output channels (iOS 18; the program must target iOS 18; ``G`` must divide the
    output channels of a weight for it to be compressed). Numpy integers are accepted.
    ``weight_threshold``: only constants with more elements are compressed (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    nbits = _bits(nbits)
    weight_threshold = _check_threshold(weight_threshold)
    if group_size is not None:
        group_size = positive_int(group_size, "group_size")
    given, model = model, _load(model)
    if group_size is None:
        op = cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", granularity="per_tensor", weight_threshold=weight_threshold)
        method = "palettize"
    else:
        method = "palettize-grouped"
        _require_target(model, method)
        op = cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", granularity="per_grouped_channel", group_size=group_size,
                                    weight_threshold=weight_threshold)
    weights = _weights(model, given, weight_threshold)
    return _run(cto.palettize_weights, model, cto.OptimizationConfig(global_config=op), method,
                {"nbits": nbits, "group_size": group_size}, _threshold_record(weight_threshold), weights=weights)


def quantize_int8(model, weight_threshold: int = WEIGHT_THRESHOLD):
    """Linear symmetric int8 weights with one scale per output channel (iOS 16).

    ``weight_threshold``: only constants with more elements are compressed (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    weight_threshold = _check_threshold(weight_threshold)
    given, model = model, _load(model)
    weights = _weights(model, given, weight_threshold)
    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                     weight_threshold=weight_threshold)
    return _run(cto.linear_quantize_weights, model, cto.OptimizationConfig(global_config=op), "int8", {"nbits": 8},
                _threshold_record(weight_threshold), weights=weights)


def quantize_int4_block(model, block_size: int = 32, weight_threshold: int = WEIGHT_THRESHOLD):
    """Linear symmetric int4 weights with one scale per block of ``block_size`` input channels (iOS 18).

    ``block_size`` must divide a weight's input channels for it to be compressed.
    ``weight_threshold``: only constants with more elements are compressed (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    block_size = positive_int(block_size, "block_size")
    weight_threshold = _check_threshold(weight_threshold)
    given, model = model, _load(model)
    _require_target(model, "int4-block")
    weights = _weights(model, given, weight_threshold)
    op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=block_size,
                                     weight_threshold=weight_threshold)
    return _run(cto.linear_quantize_weights, model, cto.OptimizationConfig(global_config=op), "int4-block",
                {"nbits": 4, "block_size": block_size}, _threshold_record(weight_threshold), weights=weights)


def prune_magnitude(model, sparsity: float, weight_threshold: int = WEIGHT_THRESHOLD):
    """Zero the ``sparsity`` share of smallest-magnitude entries of every large weight (iOS 16).

    Each weight's threshold is the ``sparsity`` quantile of its absolute values computed in
    float32, applied with ``OpThresholdPrunerConfig``: coremltools 9.0's own
    ``target_sparsity`` calls ``np.percentile`` on the float16 weight, whose index arithmetic
    overflows (NaN) from 65,521 elements on, and then prunes nothing. ``sparsity`` may be any
    real number type (``np.float32`` too); it is recorded as a Python float. ``weight_threshold``:
    only constants with more elements are pruned (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    weight_threshold = _check_threshold(weight_threshold)

    if isinstance(sparsity, (bool, np.bool_)) or not isinstance(sparsity, Real) or not 0 < float(sparsity) < 1:
        raise ValueError(f"sparsity must be a number strictly between 0 and 1, got {sparsity!r}")
    sparsity = float(sparsity)
    given, model = model, _load(model)
    weights = _weights(model, given, weight_threshold)
    from ..interpret import load_program

    consts = {op.name: op for op in load_program(model).functions["main"].operations if op.name in weights.names}
    configs = {}
    for name in weights.names:
        magnitude = np.abs(consts[name].outputs[0].val.astype(np.float32))
        threshold = float(np.quantile(magnitude, sparsity, method="lower"))  # an entry of the tensor
        configs[name] = cto.OpThresholdPrunerConfig(
            threshold=max(threshold, 1e-12), minimum_sparsity_percentile=0.0, weight_threshold=weight_threshold
        )
    return _run(cto.prune_weights, model, cto.OptimizationConfig(op_name_configs=configs), "prune",
                {"sparsity": sparsity}, {"threshold": "per weight, float32 quantile", **_threshold_record(weight_threshold)},
                weights=weights)


def prune_n_m(model, n: int = 2, m: int = 4, weight_threshold: int = WEIGHT_THRESHOLD):
    """Structured n:m pruning: in every block of ``m`` input channels, the ``n`` smallest are zero (iOS 16).

    coremltools prunes a weight only if ``m`` is at most half its input channels.
    ``weight_threshold``: only constants with more elements are pruned (see ``_check_threshold``).
    """
    import coremltools.optimize.coreml as cto

    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in (n, m))
    if not (ints and 0 < n < m):
        raise ValueError(f"n:m needs integers 0 < n < m, got {n!r}:{m!r}")
    n, m = int(n), int(m)
    weight_threshold = _check_threshold(weight_threshold)
    given, model = model, _load(model)
    weights = _weights(model, given, weight_threshold)
    op = cto.OpMagnitudePrunerConfig(n_m_ratio=(n, m), weight_threshold=weight_threshold)
    return _run(cto.prune_weights, model, cto.OptimizationConfig(global_config=op), "prune-n:m", {"n": n, "m": m},
                _threshold_record(weight_threshold), weights=weights)


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

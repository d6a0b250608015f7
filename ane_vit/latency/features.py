"""What the latency model reads from a converted program: per-op work and traffic.

``op_groups(program)`` walks an ML Program (as ``ane_vit.analysis`` reads it) and returns, for
every non-const op, its FLOPs and the bytes it moves: its non-constant inputs and its outputs
with the last axis padded to 64 bytes (how the Neural Engine stores a buffer), and the weights
it reads. Ops with identical numbers are merged into one group with a count, so a committed
file stays small (repeated blocks are the same op many times). ``features(groups, balance)``
turns the groups into the model's regressors. Nothing here is a latency.

Shapes: any ML Program; ``groups`` is a list of dicts (see ``OpGroup``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ..analysis.program import FLOP_OPS, LAYOUT_OPS, ModelLike, ProgramReport, analyze

__all__ = [
    "OP_KINDS", "FEATURE_NAMES", "op_kind", "op_groups", "features", "summary_features",
    "readiness_flags", "analyze_for_latency",
]

#: The three kinds of op the model prices differently: ``compute`` (conv, linear, matmul,
#: einsum: FLOPs and traffic), ``layout`` (reshape, transpose, ...: traffic only) and
#: ``other`` (elementwise, norms, activations, pools, softmax: traffic only).
OP_KINDS: tuple[str, ...] = ("compute", "layout", "other")

#: The regressors, in the order of the coefficients (see ``features``).
FEATURE_NAMES: tuple[str, ...] = ("roofline", "other_bytes", "layout_bytes", "ops")


def op_kind(op_type: str) -> str:
    """``compute``, ``layout`` or ``other`` for a MIL op type (see ``OP_KINDS``)."""
    if op_type in FLOP_OPS:
        return "compute"
    if op_type in LAYOUT_OPS:
        return "layout"
    return "other"


def op_groups(program: ModelLike, function: str | None = None) -> list[dict[str, Any]]:
    """Per-op FLOPs and bytes of a converted program, identical ops merged with a count.

    Args:
        program: an ``MLModel`` (ML Program), a path to a saved ``.mlpackage`` or a MIL
            ``Program`` (anything ``ane_vit.analysis.analyze`` reads).
        function: which function of a multifunction program (default ``main``).

    Returns:
        a list of ``{"op_type", "kind", "flops", "in_bytes", "out_bytes", "weight_bytes",
        "count"}`` dicts, sorted by op type then size. ``in_bytes`` and ``out_bytes`` are the
        non-constant inputs and the outputs with the last axis padded to 64 bytes;
        ``weight_bytes`` the dense bytes of the constant tensors the op reads (as
        ``analyze``'s weight bytes; parameter vectors such as pads and strides add a few bytes).

    Shapes: any static shapes (a symbolic axis counts 0 bytes).
    """
    # the analysis family's own readers (one walk, the same bytes and FLOPs as its report)
    from ..analysis.program import (
        _flops,
        _input_vars,
        _is_const,
        _load_program,
        _main_function,
        _tensor_info,
        _walk,
    )

    prog, _, _ = _load_program(program)
    func = _main_function(prog, function)
    counts: Counter = Counter()
    for op in _walk(func):
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            continue
        in_bytes = weight_bytes = 0
        for v in _input_vars(op):
            info = _tensor_info(v)
            if _is_const(v):
                if v.op.op_type == "const" and info.rank > 0:  # as analyze's weight_bytes; scalar parameters left out
                    weight_bytes += info.dense_bytes or 0  # (vectors such as pads and strides add a few bytes)
            else:
                in_bytes += info.padded_bytes or 0
        out_bytes = sum(_tensor_info(v).padded_bytes or 0 for v in op.outputs)
        key = (op.op_type, _flops(op), in_bytes, out_bytes, weight_bytes)
        counts[key] += 1
    return [
        {"op_type": t, "kind": op_kind(t), "flops": f, "in_bytes": i, "out_bytes": o, "weight_bytes": w, "count": n}
        for (t, f, i, o, w), n in sorted(counts.items())
    ]


def _check_groups(groups: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    groups = list(groups)
    needed = {"kind", "flops", "in_bytes", "out_bytes", "weight_bytes", "count"}
    for g in groups:
        missing = needed - set(g)
        if missing:
            raise ValueError(f"an op group needs the keys {sorted(needed)}; this one lacks {sorted(missing)}: {dict(g)}")
        if g["kind"] not in OP_KINDS:
            raise ValueError(f"op group kind must be one of {OP_KINDS}, got {g['kind']!r}")
    return groups


def features(groups: Iterable[Mapping[str, Any]], balance: float) -> dict[str, float]:
    """The model's regressors for one program, at a machine balance of ``balance`` FLOP/byte.

    * ``roofline``: the sum over compute ops of ``max(FLOPs, balance * bytes)``, bytes being
      inputs + outputs (padded) + weights: each op is bound by arithmetic or by memory,
      whichever takes longer (a per-op roofline, in FLOP units);
    * ``other_bytes``: bytes in and out of the other (non-layout) ops;
    * ``layout_bytes``: bytes written by layout ops (what they move);
    * ``ops``: the number of ops (a fixed cost each: dispatch, synchronisation).

    Shapes: ``groups`` as returned by ``op_groups``.
    """
    if not balance > 0:
        raise ValueError(f"balance (FLOP per byte) must be positive, got {balance!r}")
    roof = other = layout = n = 0.0
    for g in _check_groups(groups):
        c = g["count"]
        n += c
        traffic = g["in_bytes"] + g["out_bytes"]
        if g["kind"] == "compute":
            roof += c * max(float(g["flops"]), balance * (traffic + g["weight_bytes"]))
        elif g["kind"] == "layout":
            layout += c * g["out_bytes"]
        else:
            other += c * traffic
    return {"roofline": roof, "other_bytes": other, "layout_bytes": layout, "ops": n}


def summary_features(groups: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Totals of a program: FLOPs, weight bytes, activation bytes (padded outputs), op count.

    The simple regressors of the baseline models (and a sanity check: ``flops`` equals
    ``ane_vit.analysis``' total). Shapes: ``groups`` as returned by ``op_groups``.
    """
    out = {"flops": 0.0, "weight_bytes": 0.0, "activation_bytes_padded": 0.0, "ops": 0.0}
    for g in _check_groups(groups):
        c = g["count"]
        out["flops"] += c * g["flops"]
        out["weight_bytes"] += c * g["weight_bytes"]
        out["activation_bytes_padded"] += c * g["out_bytes"]
        out["ops"] += c
    return out


def readiness_flags(report: ProgramReport) -> list[str]:
    """Findings of ``ane_vit.analysis`` that say parts of the program may not run on the NE.

    Errors and warnings (rank above 5, an axis over 16384, a run-time gather, float32
    compute, a range input shape) and ops outside the ANE-friendly list, one line per rule
    with its count. The estimate assumes every op runs on the Neural Engine.
    """
    by_rule: Counter = Counter()
    severity: dict[str, str] = {}
    for f in report.findings:
        if f.severity in ("error", "warning") or f.rule == "op_not_in_ane_list":
            by_rule[f.rule] += 1
            severity[f.rule] = f.severity
    return [f"{rule} x{n} ({severity[rule]})" for rule, n in sorted(by_rule.items())]


def analyze_for_latency(program: ModelLike) -> tuple[list[dict[str, Any]], ProgramReport]:
    """``op_groups`` and ``ane_vit.analysis.analyze`` (its findings) of one program."""
    return op_groups(program), analyze(program)

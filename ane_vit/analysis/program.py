"""Reading a converted program: ``analyze`` and ``op_histogram``, the report's data classes,
the rules of ``ane_vit/data/ane_ops.json``. Re-exported by ``ane_vit.analysis``."""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Union

from .._report import JSONReport
from ..layout import ANE_ALIGN_BYTES, ANE_MAX_RANK, moves_last_axis, padded_nbytes

__all__ = [
    "LAYOUT_OPS",
    "FLOP_OPS",
    "MAX_AXIS",
    "LARGE_TENSOR_BYTES",
    "MAX_PADDING_FRACTION",
    "ModelLike",
    "TensorInfo",
    "OpInfo",
    "Finding",
    "CompressedWeight",
    "ProgramReport",
    "ane_rules",
    "analyze",
    "op_histogram",
]

if TYPE_CHECKING:  # annotations only: coremltools is imported inside the functions
    import coremltools
    from coremltools.converters.mil.mil.program import Program

#: What ``analyze`` reads: a converted model, a saved ``.mlpackage``, or a MIL program.
ModelLike = Union["coremltools.models.MLModel", str, os.PathLike, "Program"]

#: Ops that only move or regroup data (no arithmetic). Their output bytes are what they move.
LAYOUT_OPS = frozenset(
    {
        "reshape", "reshape_like", "transpose", "split", "concat", "stack", "expand_dims",
        "squeeze", "slice_by_index", "slice_by_size", "gather", "gather_nd",
        "gather_along_axis", "tile", "pad", "reverse", "flatten2d", "space_to_depth",
        "depth_to_space", "pixel_shuffle", "pixel_unshuffle", "sliding_windows",
    }
)
#: Ops whose FLOPs are counted (as 2 x multiply-accumulates); all others count 0.
FLOP_OPS = frozenset({"conv", "conv_transpose", "linear", "matmul", "einsum"})
#: Largest axis length the ANE compiler accepts for the width/height/depth of a tensor.
MAX_AXIS = 16384
#: A tensor counts as large from this many padded bytes (our threshold, see ane_ops.json).
LARGE_TENSOR_BYTES = 1 << 20
#: A large tensor is misaligned when padding is more than this share of its padded buffer.
MAX_PADDING_FRACTION = 0.25

_GATHER_OPS = frozenset({"gather", "gather_nd", "gather_along_axis"})
_DTYPE_BYTES = {"fp16": 2, "fp32": 4, "fp64": 8, "bool": 1}


def _dtype_bytes(name: str) -> float:
    """Bytes per element of a MIL dtype name (``fp16``, ``int8``, ``uint4``, ...)."""
    if name in _DTYPE_BYTES:
        return _DTYPE_BYTES[name]
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) / 8 if digits else 0


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the program: a function input or an op output.

    Shapes: ``shape`` is the static shape (a symbolic axis is kept as its name, a string).
    ``dense_bytes`` stores it packed; ``padded_bytes`` pads the last axis to 64 bytes (the
    ANE buffer layout, ``ane_vit.layout.padded_nbytes``). Both are ``None`` for a symbolic
    shape or a non-tensor value.
    """

    name: str
    shape: tuple
    dtype: str
    rank: int
    dense_bytes: int | None
    padded_bytes: int | None

    @property
    def waste_bytes(self) -> int:
        """Bytes spent on last-axis padding (0 when unknown)."""
        if self.dense_bytes is None or self.padded_bytes is None:
            return 0
        return self.padded_bytes - self.dense_bytes

    @property
    def is_static(self) -> bool:
        return all(isinstance(s, int) for s in self.shape)


@dataclass(frozen=True)
class OpInfo:
    """One non-const op: its type, its outputs, FLOPs (2 x MACs) and whether it is a layout op.

    ``moves_width`` (layout ops only, else ``None``): whether the op changes what lies along
    the last, innermost axis, the one the Neural Engine treats as width (Apple's Neural
    Engine rules: such reshapes and transposes "force a full data rewrite in memory"); see
    ``ane_vit.layout.moves_last_axis``. ``None`` also when a symbolic shape hides the answer.
    """

    name: str
    op_type: str
    outputs: tuple[TensorInfo, ...]
    flops: int = 0
    is_layout: bool = False
    moves_width: bool | None = None

    @property
    def dense_bytes(self) -> int:
        return sum(t.dense_bytes or 0 for t in self.outputs)

    @property
    def padded_bytes(self) -> int:
        return sum(t.padded_bytes or 0 for t in self.outputs)


@dataclass(frozen=True)
class Finding:
    """One ANE-readiness finding: which rule, how severe, where, why, and who says so."""

    rule: str
    severity: str
    op: str
    message: str
    reason: str
    citation: str


@dataclass(frozen=True)
class CompressedWeight:
    """One weight the program stores compressed: ``constexpr_*`` ops expand it when the model loads.

    ``name`` is the expanded weight's variable; ``method`` names the compression as the ops
    store it (``palettized 4-bit``, ``int8 linear``, ``int4 blockwise``, ``pruned to 50%
    sparsity``, several joined by `` + ``); ``op_types`` are the ``constexpr_*`` ops, outermost
    first. ``stored_bytes`` are the bytes of their constant inputs (indices, tables, scales,
    zero points, masks, nonzero values), what the file holds; ``dense_bytes`` the expanded weight.

    Shapes: ``shape`` is the expanded weight's shape.
    """

    name: str
    method: str
    op_types: tuple[str, ...]
    shape: tuple
    dtype: str
    stored_bytes: int
    dense_bytes: int


@dataclass
class ProgramReport(JSONReport):
    """Everything ``analyze`` found in one program. Counts and bytes are facts, not latency."""

    source: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ops: list[OpInfo]
    weight_bytes: int
    n_weights: int
    findings: list[Finding] = field(default_factory=list)
    compressed: list[CompressedWeight] = field(default_factory=list)

    def histogram(self) -> Counter:
        """Op counts by type (const ops left out)."""
        return Counter(op.op_type for op in self.ops)

    @property
    def layout_ops(self) -> list[OpInfo]:
        return [op for op in self.ops if op.is_layout]

    def summary(self) -> dict[str, Any]:
        """Totals over the program (JSON-safe).

        Every byte total adds up the outputs of every op (the program's inputs are in none).
        ``..._padded`` pads every one of them to 64-byte rows: an upper bound of the padded
        bytes. ``..._padded_lower`` pads only the program's outputs and keeps the
        intermediates dense: a lower bound (Apple requires 64-byte rows for a model's inputs
        and outputs, while intermediates held in L2 cache "may tolerate smaller widths").
        ``layout_*_moving_width`` / ``..._keeping_width`` split the layout ops by whether they
        change the last axis (``OpInfo.moves_width``). See ``width_summary``.
        """
        dense = sum(op.dense_bytes for op in self.ops)
        padded = sum(op.padded_bytes for op in self.ops)
        layout = self.layout_ops
        totals = {
            "ops": len(self.ops),
            "op_types": len(self.histogram()),
            "flops": sum(op.flops for op in self.ops),
            "weight_bytes": self.weight_bytes,
            "weights": self.n_weights,
            "activation_bytes_dense": dense,
            "activation_bytes_padded": padded,
            "padding_waste_bytes": padded - dense,
            "padding_waste_fraction": (padded - dense) / padded if padded else 0.0,
            "layout_ops": len(layout),
            "layout_bytes_dense": sum(op.dense_bytes for op in layout),
            "layout_bytes_padded": sum(op.padded_bytes for op in layout),
            "max_rank": max((t.rank for op in self.ops for t in op.outputs), default=0),
            "findings": len(self.findings),
            "findings_by_severity": dict(Counter(f.severity for f in self.findings)),
            "findings_by_rule": dict(Counter(f.rule for f in self.findings)),
            **self.compression_summary(),
        }
        totals.update(self.width_summary())
        return totals

    def _lower_bytes(self, op: OpInfo) -> int:
        """An op's output bytes with only the program's outputs padded (the lower bound)."""
        names = {t.name for t in self.outputs}
        return sum((t.padded_bytes if t.name in names else t.dense_bytes) or 0 for t in op.outputs)

    def width_summary(self) -> dict[str, Any]:
        """Layout ops split by the width (last) axis, and padded bytes as two bounds (JSON-safe).

        ``activation_bytes_padded_lower``: every op output, only the program's outputs padded
        to 64 bytes (``activation_bytes_padded`` of ``summary`` is the upper bound, every
        output padded). ``layout_ops_moving_width`` and ``layout_ops_keeping_width`` count
        the layout ops that change the last axis and those that leave it; their bytes are
        given dense, padded (upper bound) and ``_lower``. ``layout_ops_width_unknown``
        counts layout ops whose symbolic shapes hide the answer (in neither group).
        Facts about the program, not latency.
        """
        layout = self.layout_ops
        out: dict[str, Any] = {
            "activation_bytes_padded_lower": sum(self._lower_bytes(op) for op in self.ops),
            "layout_bytes_padded_lower": sum(self._lower_bytes(op) for op in layout),
        }
        for key, flag in (("moving_width", True), ("keeping_width", False)):
            group = [op for op in layout if op.moves_width is flag]
            out[f"layout_ops_{key}"] = len(group)
            out[f"layout_bytes_{key}_dense"] = sum(op.dense_bytes for op in group)
            out[f"layout_bytes_{key}_padded"] = sum(op.padded_bytes for op in group)
            out[f"layout_bytes_{key}_padded_lower"] = sum(self._lower_bytes(op) for op in group)
        out["layout_ops_width_unknown"] = sum(1 for op in layout if op.moves_width is None)
        return out

    def compression_summary(self) -> dict[str, Any]:
        """Weights stored compressed (behind ``constexpr_*`` ops): how many, bytes stored and
        expanded, and the methods found (sorted, JSON-safe). Zeros and ``[]`` for a float program."""
        return {
            "compressed_weights": len(self.compressed),
            "compressed_weight_bytes_stored": sum(w.stored_bytes for w in self.compressed),
            "compressed_weight_bytes_dense": sum(w.dense_bytes for w in self.compressed),
            "compression": sorted({w.method for w in self.compressed}),
        }

    def _compression_lines(self) -> list[str]:
        """The table's lines on compressed weights: what and how, then the bytes (within the column)."""
        c = self.compression_summary()
        if not c["compressed_weights"]:
            return ["compressed weights: none (no constexpr_* op)"]
        stored, dense = c["compressed_weight_bytes_stored"], c["compressed_weight_bytes_dense"]
        return [*_wrap(f"compressed weights: {c['compressed_weights']} behind constexpr_* ops "
                       f"({', '.join(c['compression'])}):", 2),
                f"  {stored / 1e6:.3f} MB stored, {dense / 1e6:.3f} MB expanded ({dense / max(stored, 1):.2f}x)"]

    def to_dict(self) -> dict[str, Any]:
        """The whole report as plain JSON-safe Python (lists, dicts, str, int, float)."""

        def tensor(t: TensorInfo) -> dict:
            d = asdict(t)
            d["shape"] = [s if isinstance(s, int) else str(s) for s in t.shape]
            return d

        return {
            "source": self.source,
            "summary": self.summary(),
            "histogram": dict(self.histogram().most_common()),
            "inputs": [tensor(t) for t in self.inputs],
            "outputs": [tensor(t) for t in self.outputs],
            "ops": [
                {"name": op.name, "op_type": op.op_type, "flops": op.flops, "is_layout": op.is_layout,
                 "moves_width": op.moves_width, "outputs": [tensor(t) for t in op.outputs]}
                for op in self.ops
            ],
            "findings": [asdict(f) for f in self.findings],
            "compressed_weights": [
                {**asdict(w), "op_types": list(w.op_types), "shape": [d if isinstance(d, int) else str(d) for d in w.shape]}
                for w in self.compressed
            ],
        }

    def table(self, top: int = 10) -> str:
        """Printable text: totals, op histogram, the ``top`` largest activations, findings.

        Sizes in MB (10^6 bytes) and kB (10^3 bytes). Padded bytes are given as two bounds
        (``width_summary``): at least, only the program's outputs padded to 64 bytes; at
        most, every op output padded. Lines stay within 76 characters (a book's column) except
        unbreakable ones such as URLs.
        """
        s = self.summary()
        lines = [
            *_source_lines(self.source),
            *_wrap("inputs:  " + ", ".join(f"{t.name} {_fmt_shape(t.shape)} {t.dtype}" for t in self.inputs), 9),
            *_wrap("outputs: " + ", ".join(f"{t.name} {_fmt_shape(t.shape)} {t.dtype}" for t in self.outputs), 9),
            f"ops: {s['ops']} ({s['op_types']} types); FLOPs: {s['flops']:,}",
            "  (FLOPs: 2 x MACs of conv, linear, matmul and einsum)",
            f"weights: {s['weights']} const tensors, {s['weight_bytes'] / _MB:.3f} MB",
            *self._compression_lines(),
            *_bytes_lines(s),
            "",
            f"{'op type':<24}{'count':>7}",
        ]
        lines += [f"{k:<24}{v:>7}" for k, v in self.histogram().most_common()]
        lines += ["", f"largest {top} op outputs (by padded bytes):",
                  f"{'op':<20}{'type':<13}{'shape':<20}{'dtype':<5}{'pad. kB':>10}{'waste%':>7}"]
        rows = sorted(((op, t) for op in self.ops for t in op.outputs), key=lambda r: -(r[1].padded_bytes or 0))
        for op, t in rows[:top]:
            pad = t.padded_bytes or 0
            waste = 100 * t.waste_bytes / pad if pad else 0.0
            lines.append(f"{op.name[:19]:<20}{op.op_type[:12]:<13}{_fmt_shape(t.shape):<20}{t.dtype:<5}"
                         f"{pad / 1e3:>10.1f}{waste:>7.1f}")
        lines += ["", f"ANE-readiness findings: {len(self.findings)}"]
        by_rule: dict[str, list[Finding]] = {}
        for f in self.findings:
            by_rule.setdefault(f.rule, []).append(f)
        for rule, fs in by_rule.items():
            names = ", ".join(f.op for f in fs[:3]) + (f", ... (+{len(fs) - 3})" if len(fs) > 3 else "")
            lines += _wrap(f"[{fs[0].severity}] {rule} x{len(fs)}: {names}", 4)
            for label, text in (("e.g.", fs[0].message), ("why:", fs[0].reason), ("source:", fs[0].citation)):
                lines += _wrap(f"    {label} {text}", 6)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


_MB = 1e6  # the book's unit: MB = 10^6 bytes


_WIDTH = 76  # characters of a code-output line in the book's column at 1280 pixels


def _wrap(text: str, indent: int) -> list[str]:
    """``text`` broken into lines of at most ``_WIDTH`` characters (words are not split)."""
    return textwrap.wrap(text, _WIDTH, subsequent_indent=" " * indent, break_long_words=False, break_on_hyphens=False)


def _source_lines(source: str, width: int = _WIDTH) -> list[str]:
    """``ML Program: <source>``, the file name on its own line when the path is long, and a
    long file name broken after underscores (``a_b_c`` -> ``a_b_`` / ``c``)."""
    line = f"ML Program: {source}"
    if len(line) <= width or os.sep not in source:
        return [line]
    folder, name = os.path.split(source)
    lines, current = [f"ML Program: {folder}{os.sep}"], "  "
    for part in re.split(r"(?<=_)", name):
        if len(current) + len(part) > width and current.strip():
            lines.append(current)
            current = "    "
        current += part
    return lines + [current]


def _bytes_lines(s: dict[str, Any]) -> list[str]:
    """The activation and layout byte totals of ``ProgramReport.summary()``, with both bounds
    of the padded bytes and the layout ops split by the width (last) axis."""

    def mb(key: str) -> str:
        return f"{s[key] / _MB:.3f}"

    def bounds(prefix: str) -> str:
        return f"{mb(prefix + '_padded_lower')}-{mb(prefix + '_padded')} MB"

    return [
        f"activations: {mb('activation_bytes_dense')} MB dense; padded to {ANE_ALIGN_BYTES} B rows: "
        f"{bounds('activation_bytes')}",
        "  (lower bound: only the program's outputs padded; upper bound: every",
        f"  op output padded, {100 * s['padding_waste_fraction']:.1f}% of it padding)",
        f"layout ops: {s['layout_ops']}, writing {mb('layout_bytes_dense')} MB dense, {bounds('layout_bytes')} padded",
        f"  moving the last (width) axis: {s['layout_ops_moving_width']} ops, "
        f"{mb('layout_bytes_moving_width_dense')} MB dense, {bounds('layout_bytes_moving_width')}",
        f"  keeping the last axis: {s['layout_ops_keeping_width']} ops, "
        f"{mb('layout_bytes_keeping_width_dense')} MB dense, {bounds('layout_bytes_keeping_width')}",
    ] + ([f"  width unknown (symbolic shapes): {s['layout_ops_width_unknown']} ops"] if s["layout_ops_width_unknown"] else [])


@lru_cache(maxsize=1)
def ane_rules() -> dict[str, Any]:
    """The documented ANE-friendly ops, rules and their sources (``ane_vit/data/ane_ops.json``)."""
    text = resources.files("ane_vit").joinpath("data/ane_ops.json").read_text(encoding="utf-8")
    return json.loads(text)


def _citation(keys: list[str]) -> str:
    sources = ane_rules()["sources"]
    return "; ".join(sources[k]["title"] + (f" <{sources[k]['url']}>" if sources[k]["url"] else "") for k in keys)


# --------------------------------------------------------------------------- loading


def _load_program(model_or_path: ModelLike) -> tuple[Any, Any, str]:
    """Return ``(MIL Program, spec or None, source label)``: ``ane_vit.interpret.read_program``,
    the one loader (its errors name the file and the failure: see ``ane_vit.interpret.load``)."""
    from ..interpret.load import read_program

    return tuple(read_program(model_or_path))


def _main_function(prog: Any, function: str | None = None) -> Any:
    funcs = prog.functions
    if function is not None:
        if function not in funcs:
            raise ValueError(f"the program has no function {function!r}; it has {sorted(funcs)}")
        return funcs[function]
    return funcs["main"] if "main" in funcs else next(iter(funcs.values()))


def _walk(block: Any):
    """All ops of a block, nested blocks (cond/while bodies) included, in program order."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk(inner)


# --------------------------------------------------------------------------- facts


def _tensor_info(var: Any) -> TensorInfo:
    from coremltools.converters.mil.mil import types

    if not types.is_tensor(var.sym_type) and not types.is_scalar(var.sym_type):
        return TensorInfo(var.name, (), getattr(var.sym_type, "__name__", str(var.sym_type)), 0, None, None)
    dtype = types.builtin_to_string(var.dtype)
    shape = tuple(int(s) if not _is_symbolic(s) else str(s) for s in var.shape)
    elem = _dtype_bytes(dtype)
    if dtype == "string" or not elem or not all(isinstance(s, int) for s in shape):
        return TensorInfo(var.name, shape, dtype, len(shape), None, None)
    dense = math.ceil(math.prod(shape) * elem)
    padded = padded_nbytes(shape, max(1, int(elem))) if elem >= 1 else dense
    return TensorInfo(var.name, shape, dtype, len(shape), dense, padded)


def _is_symbolic(dim: Any) -> bool:
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    return is_symbolic(dim)


def _is_const(var: Any) -> bool:
    op = var.op
    return op is not None and (op.op_type == "const" or op.op_type.startswith("constexpr_"))


def _input_vars(op: Any) -> list:
    out = []
    for v in op.inputs.values():
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return out


def _static(shape: Any) -> tuple[int, ...] | None:
    """The shape as ints, or None if any axis is symbolic."""
    if any(_is_symbolic(s) for s in shape):
        return None
    return tuple(int(s) for s in shape)


def _flops(op: Any) -> int:
    """2 x multiply-accumulates of conv/conv_transpose/linear/matmul/einsum (bias, activations not counted).

    Returns 0 for any other op and for symbolic shapes.
    """
    t = op.op_type
    if t not in FLOP_OPS:
        return 0
    out = _static(op.outputs[0].shape)
    operands = op.values if t == "einsum" else (op.x, op.y if t == "matmul" else op.weight)
    shapes = [_static(v.shape) for v in operands]
    if out is None or any(s is None for s in shapes):
        return 0
    if t == "conv":  # weight (C_out, C_in/groups, *k): each output element sums C_in/groups * prod(k)
        return 2 * math.prod(out) * math.prod(shapes[1][1:])
    if t == "conv_transpose":  # weight (C_in, C_out/groups, *k): each input element scatters to these
        return 2 * math.prod(shapes[0]) * math.prod(shapes[1][1:])
    if t == "linear":  # weight (D_out, D_in)
        return 2 * math.prod(out) * shapes[1][-1]
    if t == "matmul":  # x (..., M, K) or (..., K, M) with transpose_x
        xs = shapes[0]
        tx = bool(op.transpose_x.val) if op.transpose_x is not None else False
        k = xs[0] if len(xs) == 1 else (xs[-2] if tx else xs[-1])
        return 2 * math.prod(out) * k
    # einsum: every index letter of the equation is one loop; MACs = product of all loop sizes
    lhs = op.equation.val.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, shape in zip(lhs, shapes):
        sizes.update(zip(letters, shape))
    return 2 * math.prod(sizes.values())


def _flexible_inputs(spec: Any, func: Any) -> dict[str, tuple[str, str]]:
    """Input name -> (kind, what it allows): kind is 'range', 'enumerated' or 'symbolic'."""
    flex: dict[str, tuple[str, str]] = {}
    if spec is not None:
        for feat in spec.description.input:
            which = feat.type.WhichOneof("Type")
            if which == "multiArrayType":
                arr = feat.type.multiArrayType
                kind = arr.WhichOneof("ShapeFlexibility")
                if kind == "enumeratedShapes":
                    detail = ", ".join(_fmt_shape(tuple(s.shape)) for s in arr.enumeratedShapes.shapes)
                elif kind == "shapeRange":
                    detail = _fmt_shape(tuple(_fmt_range(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges))
                else:
                    detail = ""
            elif which == "imageType":
                img = feat.type.imageType
                kind = img.WhichOneof("SizeFlexibility")
                if kind == "enumeratedSizes":
                    detail = ", ".join(f"{s.height}x{s.width}" for s in img.enumeratedSizes.sizes)
                elif kind == "imageSizeRange":
                    r = img.imageSizeRange
                    detail = f"{_fmt_range(r.heightRange.lowerBound, r.heightRange.upperBound)} x " \
                             f"{_fmt_range(r.widthRange.lowerBound, r.widthRange.upperBound)}"
                else:
                    detail = ""
            else:
                kind = None
            if kind:
                flex[feat.name] = ("enumerated" if kind.startswith("enumerated") else "range", detail)
    for name, var in func.inputs.items():
        if name not in flex and any(_is_symbolic(s) for s in var.shape):
            flex[name] = ("symbolic", _fmt_shape(tuple(var.shape)))
    return flex


def _fmt_range(lower: int, upper: int) -> str:
    """A size range as text: ``8`` for a fixed size, ``1..64``, or ``1..`` when unbounded (upper -1)."""
    if lower == upper:
        return str(lower)
    return f"{lower}..{upper}" if upper >= 0 else f"{lower}.."


# --------------------------------------------------------------------------- compressed weights


def _compression_method(op: Any) -> str:
    """What one ``constexpr_*`` op stores, in words (from its inputs, not from any metadata)."""
    from coremltools.converters.mil.mil import types

    t = op.op_type
    if t in ("constexpr_lut_to_dense", "constexpr_lut_to_sparse"):  # the latter: iOS18, a palettized sparse weight
        lut = op.inputs["lut"]
        entries = lut.shape[0] if "shape" in op.inputs else lut.shape[-2]  # iOS16: (2**n,); iOS18: (*blocks, 2**n, v)
        groups = "" if "shape" in op.inputs or math.prod(lut.shape[:-2]) == 1 else ", grouped"
        return f"palettized {int(round(math.log2(entries)))}-bit{groups}"
    if t == "constexpr_affine_dequantize":
        return f"{types.builtin_to_string(op.inputs['quantized_data'].dtype)} linear"
    if t == "constexpr_blockwise_shift_scale":
        return f"{types.builtin_to_string(op.inputs['data'].dtype)} blockwise"
    if t == "constexpr_sparse_to_dense":
        size = math.prod(op.outputs[0].shape)
        nonzero = op.inputs["nonzero_data"].shape[0] if op.inputs["nonzero_data"].shape else 0
        return f"pruned to {100 * (1 - nonzero / size):.0f}% sparsity" if size else "pruned"
    if t == "constexpr_cast":
        return f"stored as {types.builtin_to_string(op.inputs['source_val'].dtype)}"
    return t


def _compressed_weights(func: Any) -> list[CompressedWeight]:
    """The weights behind ``constexpr_*`` ops that a computing op reads, each counted once with the
    whole chain of ``constexpr_*`` ops that expands it (iOS 18 joins them, e.g. pruned + palettized)."""
    found = []
    for op in _walk(func):
        if not op.op_type.startswith("constexpr_"):
            continue
        if not any(not c.op_type.startswith("constexpr_") for c in op.outputs[0].child_ops):
            continue  # feeds only another constexpr op: counted with the outermost one
        chain, stored, stack, seen = [], 0, [op], {op.name}
        while stack:
            cur = stack.pop()
            chain.append(cur)
            for v in _input_vars(cur):
                if v.op is None or v.op.name in seen:
                    continue
                seen.add(v.op.name)  # once per op: constexpr_lut_to_sparse feeds both mask and values
                if v.op.op_type.startswith("constexpr_"):
                    stack.append(v.op)
                else:  # a const input: indices, table, scale, zero point, mask, values
                    stored += _tensor_info(v).dense_bytes or 0
        info = _tensor_info(op.outputs[0])
        found.append(CompressedWeight(
            name=op.outputs[0].name,
            method=" + ".join(dict.fromkeys(_compression_method(c) for c in chain)),
            op_types=tuple(c.op_type for c in chain),
            shape=info.shape,
            dtype=info.dtype,
            stored_bytes=stored,
            dense_bytes=info.dense_bytes or 0,
        ))
    return found


# --------------------------------------------------------------------------- width


def _last_axis(shape: Any) -> int | str:
    """Length of a shape's last axis (a rank-0 shape counts as 1); a symbolic length as its name."""
    if len(shape) == 0:
        return 1
    last = shape[-1]
    return str(last) if _is_symbolic(last) else int(last)


def _moves_width(op: Any) -> bool | None:
    """Whether a layout op changes what lies along the last (width) axis; ``None`` for other
    ops, or when symbolic shapes hide the answer.

    A transpose reads its ``perm``; every other layout op compares the length of the last
    axis of its data input(s) (``x``, or each of ``values`` for concat and stack) with that
    of each output (``ane_vit.layout.moves_last_axis``). A reverse or gather along the last
    axis rewrites each row in place without changing its length: it moves the width too.
    """
    if op.op_type not in LAYOUT_OPS:
        return None
    data = list(op.values) if "values" in op.inputs else [op.x]
    rank = len(data[0].shape)
    if op.op_type == "transpose":
        return moves_last_axis(data[0].shape, op.outputs[0].shape, perm=[int(p) for p in op.perm.val])
    if op.op_type == "reverse" and rank:
        axes = range(rank) if op.axes is None else [int(a) % rank for a in op.axes.val]
        if rank - 1 in axes:
            return True
    if op.op_type in ("gather", "gather_along_axis") and rank and int(op.axis.val) % rank == rank - 1:
        return True
    lengths = {_last_axis(v.shape) for v in (*data, *op.outputs)}
    if any(isinstance(n, str) for n in lengths):
        return None if len(lengths) > 1 else False  # the same symbol everywhere: rows kept
    return any(moves_last_axis(_last_only(d.shape), _last_only(o.shape)) for d in data for o in op.outputs)


def _last_only(shape: Any) -> tuple[int, ...]:
    """The last axis of a static shape, as ``moves_last_axis`` reads it (outer axes may be symbolic)."""
    return (_last_axis(shape),) if len(shape) else ()


# --------------------------------------------------------------------------- rules


def _findings(func: Any, ops: list[tuple[Any, OpInfo]], flex: dict[str, tuple[str, str]]) -> list[Finding]:
    rules = {r["id"]: r for r in ane_rules()["rules"]}
    friendly = {e["op"] for e in ane_rules()["ane_friendly_ops"]}
    out_names = {v.name for v in func.outputs}
    found: list[Finding] = []

    def add(rule_id: str, where: str, message: str, severity: str | None = None) -> None:
        r = rules[rule_id]
        found.append(Finding(rule_id, severity or r["severity"], where, message, r["reason"], _citation(r["source"])))

    for name, (kind, detail) in flex.items():
        article = "an" if kind[0] in "aeiou" else "a"
        add("flexible_input_shape", name, f"input {name!r} has {article} {kind} (not fixed) shape" + (f": {detail}" if detail else ""),
            severity="info" if kind == "enumerated" else None)
    for mil_op, info in ops:
        for t in info.outputs:
            if t.rank > ANE_MAX_RANK:
                add("rank_above_5", info.name, f"{info.op_type} outputs rank {t.rank} {_fmt_shape(t.shape)}")
            big = [s for s in t.shape if isinstance(s, int) and s > MAX_AXIS]
            if big:
                add("axis_over_16384", info.name, f"{info.op_type} outputs {_fmt_shape(t.shape)}: axis of {max(big)} > {MAX_AXIS}")
            if (t.padded_bytes or 0) > LARGE_TENSOR_BYTES and t.waste_bytes > MAX_PADDING_FRACTION * t.padded_bytes:
                add("misaligned_last_axis", info.name,
                    f"{info.op_type} outputs {_fmt_shape(t.shape)} {t.dtype}: {t.padded_bytes / 1e6:.2f} MB padded, "
                    f"{100 * t.waste_bytes / t.padded_bytes:.0f}% of it padding (last axis {t.shape[-1]})")
        if info.op_type in _GATHER_OPS and not all(_is_const(v) for v in _input_vars(mil_op)):
            add("runtime_gather", info.name, f"{info.op_type} reads an index or a table computed at run time")
        if any(t.dtype == "fp32" for t in info.outputs):
            boundary = info.op_type == "cast" and (
                any(v.op is None for v in _input_vars(mil_op)) or any(t.name in out_names for t in info.outputs)
            )
            if not boundary:
                add("float32_compute", info.name, f"{info.op_type} computes in float32")
        if info.op_type not in friendly:
            add("op_not_in_ane_list", info.name, f"op type {info.op_type!r} is not in the ANE-friendly list")
    return found


# --------------------------------------------------------------------------- entry points


def analyze(model_or_path: ModelLike, function: str | None = None) -> ProgramReport:
    """Read a converted ML Program and report what it contains (see the module docstring).

    Args:
        model_or_path: a ``coremltools.models.MLModel`` (ML Program), a path to a saved
            ``.mlpackage``, or a MIL ``Program``.
        function: which function of a multifunction program (e.g. one made by
            ``coremltools.utils.materialize_dynamic_shape_mlmodel``); default ``main``,
            else the first one.

    Returns:
        a ``ProgramReport``: per-op shapes/dtypes/bytes/FLOPs, weights, findings.

    Shapes: any; each output's last axis is padded to 64 bytes for ``padded_bytes``.
    """
    prog, spec, source = _load_program(model_or_path)
    func = _main_function(prog, function)
    if function is not None:
        source = f"{source}, function {function!r}"
        spec = None  # the spec's description is the default function's; read this function's own inputs
    ops: list[tuple[Any, OpInfo]] = []
    weights: dict[str, int] = {}
    for op in _walk(func):
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            continue
        for v in _input_vars(op):
            if _is_const(v) and v.op.op_type == "const" and v.name not in weights:
                # every non-string const counted once; op parameters (strides, axes) are a few bytes
                weights[v.name] = _tensor_info(v).dense_bytes or 0
        info = OpInfo(op.name, op.op_type, tuple(_tensor_info(v) for v in op.outputs), _flops(op), op.op_type in LAYOUT_OPS,
                      _moves_width(op))
        ops.append((op, info))
    flex = _flexible_inputs(spec, func)
    return ProgramReport(
        source=source,
        inputs=[_tensor_info(v) for v in func.inputs.values()],
        outputs=[_tensor_info(v) for v in func.outputs],
        ops=[info for _, info in ops],
        weight_bytes=sum(weights.values()),
        n_weights=sum(1 for b in weights.values() if b),
        findings=_findings(func, ops, flex),
        compressed=_compressed_weights(func),
    )


def op_histogram(model: ModelLike, include_const: bool = False) -> Counter:
    """Count the ops of a converted ML Program by type (``const`` ops left out by default)."""
    prog, _, _ = _load_program(model)
    ops = _main_function(prog).operations
    return Counter(op.op_type for op in ops if include_const or op.op_type != "const")

"""What a Core AI program contains: ops by type, value ranks and dtypes, weights, file size.

``summarize(path_or_program)`` reads an ``.aimodel`` (or an ``AIProgram`` in memory) and
returns an ``AIProgramReport``, the Core AI counterpart of ``ane_vit.analysis.analyze``:

* from Apple's supported API (``AIModelAsset.summary(include_statistics=True)``): the
  functions, the storage types (scalar type -> count), the compute types and Apple's
  operation distribution, which counts the whole program after Core AI's own lowering
  (a ``broadcasting_add`` there also appears as its ``broadcast_in_dims`` + ``add``);
* from the program itself (the MLIR the converter wrote, read through
  ``coreai._compiler.ir``, which Apple marks unversioned: this reader is written for
  coreai-core 1.0.0b3): every op of the entry function in program order with its result
  shapes and dtypes; the private functions it ``invoke``\\ s (coreai-torch's composites:
  batch norm, average pooling); the permutation of each ``transpose`` and whether it
  moves the last axis (``ane_vit.layout.moves_last_axis``); the axis of each ``softmax``;
  constant bytes by dtype; the size of the folder on disk.

Counts are program facts, not latency. Op names drop the ``coreai.`` prefix
(``conv2d``, ``decomposable.broadcasting_add``). See ``notebooks/10_core_ai.ipynb``.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .._report import JSONReport
from ..layout import moves_last_axis
from .paths import aimodel_nbytes, check_aimodel
from .stack import require_coreai

__all__ = ["LAYOUT_OPS", "AITensor", "AIOp", "AIProgramReport", "summarize"]

#: Core AI ops that only move or regroup data (no arithmetic).
LAYOUT_OPS = frozenset({
    "transpose", "reshape", "concat", "split", "slice", "pad", "broadcast_to", "broadcast_in_dims",
    "expand_dims", "squeeze", "gather", "gather_nd", "tile", "reverse",
})

_ELEMENT = re.compile(r"^(si|ui|i|f|bf)(\d+)$")


def _dtype_name(element_type: str) -> str:
    """MLIR element type -> our name: f32 -> float32, f16 -> float16, si32 -> int32, ui8 -> uint8, i1 -> bool."""
    m = _ELEMENT.match(element_type)
    if not m:
        return element_type
    kind, bits = m.groups()
    if kind == "i" and bits == "1":
        return "bool"
    return {"si": "int", "i": "int", "ui": "uint", "f": "float", "bf": "bfloat"}[kind] + bits


def _dtype_bits(dtype: str) -> int:
    if dtype == "bool":
        return 8
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return int(digits) if digits else 0


@dataclass(frozen=True)
class AITensor:
    """A value of the program. Shapes: ``shape`` with ``None`` for a dynamic axis; ``dtype`` as ``float16``."""

    name: str
    shape: tuple
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int | None:
        """Dense bytes, or ``None`` for a dynamic shape."""
        if any(s is None for s in self.shape):
            return None
        return math.ceil(math.prod(self.shape) * _dtype_bits(self.dtype) / 8)


@dataclass(frozen=True)
class AIOp:
    """One non-constant op: its type, its results and, where read, a detail (perm, axis, callee)."""

    op_type: str
    outputs: tuple[AITensor, ...]
    detail: dict = field(default_factory=dict)

    @property
    def is_layout(self) -> bool:
        return self.op_type in LAYOUT_OPS


@dataclass
class AIProgramReport(JSONReport):
    """Everything ``summarize`` found in one Core AI program (facts, not latency)."""

    source: str
    entry: str
    functions: list[str]
    inputs: list[AITensor]
    outputs: list[AITensor]
    ops: list[AIOp]
    composites: dict[str, list[AIOp]]
    constants: dict[str, dict[str, int]]
    file_bytes: int | None = None
    metadata: dict | None = None
    storage_types: list[tuple[str, int]] | None = None
    compute_types: list[str] | None = None
    operation_distribution: list[tuple[str, int]] | None = None

    def inlined_ops(self) -> list[AIOp]:
        """The entry function's ops with each ``invoke`` replaced by its callee's ops (recursively)."""
        def expand(ops: list[AIOp], depth: int = 0) -> list[AIOp]:
            out: list[AIOp] = []
            for op in ops:
                callee = op.detail.get("callee")
                if op.op_type == "invoke" and callee in self.composites and depth < 16:
                    out.extend(expand(self.composites[callee], depth + 1))
                else:
                    out.append(op)
            return out

        return expand(self.ops)

    def histogram(self, inlined: bool = False) -> Counter:
        """Op counts by type in the entry function (``inlined``: composites expanded)."""
        return Counter(op.op_type for op in (self.inlined_ops() if inlined else self.ops))

    def summary(self) -> dict[str, Any]:
        """Totals (JSON-safe). ``ops`` counts the entry function's non-constant ops (an ``invoke``
        counts one); ``ops_inlined`` expands the composites; rank and layout facts use the inlined ops."""
        inlined = self.inlined_ops()
        values = [t for op in inlined for t in op.outputs]
        transposes = [op for op in inlined if op.op_type == "transpose"]
        softmax = [op for op in inlined if op.op_type == "softmax"]
        dtypes = Counter(t.dtype for t in values)
        return {
            "ops": len(self.ops),
            "ops_inlined": len(inlined),
            "op_types": len(self.histogram()),
            "invokes": sum(op.op_type == "invoke" for op in self.ops),
            "composite_functions": len(self.composites),
            "layout_ops": sum(op.is_layout for op in inlined),
            "transposes": len(transposes),
            "transposes_moving_last_axis": sum(bool(op.detail.get("moves_last_axis")) for op in transposes),
            "max_rank": max((t.rank for t in values), default=0),
            "values_rank_5": sum(t.rank == 5 for t in values),
            "values_rank_above_5": sum(t.rank > 5 for t in values),
            "softmax": len(softmax),
            "softmax_axes": dict(Counter(f"axis {op.detail.get('axis')} of rank {op.outputs[0].rank}" for op in softmax)),
            "value_dtypes": dict(dtypes.most_common()),
            "constants": sum(c["count"] for c in self.constants.values()),
            "constant_bytes": sum(c["bytes"] for c in self.constants.values()),
            "file_bytes": self.file_bytes,
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-safe Python."""
        def tensor(t: AITensor) -> dict:
            return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}

        def op(o: AIOp) -> dict:
            return {"op_type": o.op_type, "outputs": [tensor(t) for t in o.outputs], "detail": o.detail}

        return {
            "source": self.source,
            "entry": self.entry,
            "summary": self.summary(),
            "histogram": dict(self.histogram().most_common()),
            "histogram_inlined": dict(self.histogram(inlined=True).most_common()),
            "functions": self.functions,
            "inputs": [tensor(t) for t in self.inputs],
            "outputs": [tensor(t) for t in self.outputs],
            "constants": self.constants,
            "storage_types": [list(x) for x in self.storage_types] if self.storage_types is not None else None,
            "compute_types": self.compute_types,
            "operation_distribution": dict(self.operation_distribution) if self.operation_distribution is not None else None,
            "metadata": self.metadata,
            "ops": [op(o) for o in self.ops],
            "composites": {k: [op(o) for o in v] for k, v in self.composites.items()},
        }

    def table(self) -> str:
        """Printable text: inputs, outputs, totals, op histogram, storage types."""
        s = self.summary()

        def fmt(t: AITensor) -> str:
            return f"{t.name} ({', '.join('?' if d is None else str(d) for d in t.shape)}) {t.dtype}"

        lines = [
            f"Core AI program: {self.source}",
            f"functions: {', '.join(self.functions)} (entry {self.entry})",
            "inputs:  " + ", ".join(fmt(t) for t in self.inputs),
            "outputs: " + ", ".join(fmt(t) for t in self.outputs),
        ]
        if self.file_bytes is not None:
            lines.append(f"size on disk: {self.file_bytes / 1e6:.3f} MB")
        lines += [
            f"constants: {s['constants']} ({s['constant_bytes'] / 1e6:.3f} MB): "
            + ", ".join(f"{k} {v['count']} ({v['bytes'] / 1e6:.3f} MB)" for k, v in self.constants.items()),
            f"ops in {self.entry}: {s['ops']} ({s['op_types']} types), {s['ops_inlined']} with the "
            f"{s['composite_functions']} composite function(s) inlined",
            f"layout ops: {s['layout_ops']}; transposes: {s['transposes']} ({s['transposes_moving_last_axis']} move the last axis)",
            f"max rank: {s['max_rank']}; rank-5 values: {s['values_rank_5']}; above 5: {s['values_rank_above_5']}",
            f"softmax: {s['softmax']} ({', '.join(f'{k}: {v}' for k, v in s['softmax_axes'].items()) or 'none'})",
            f"value dtypes: {s['value_dtypes']}",
            "",
            f"{'op type (entry function)':<36}{'count':>7}",
        ]
        lines += [f"{k:<36}{v:>7}" for k, v in self.histogram().most_common()]
        if self.storage_types is not None:
            lines += ["", "Apple's summary: storage types " + ", ".join(f"{k} {v}" for k, v in self.storage_types)
                      + "; compute types " + ", ".join(self.compute_types or [])]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------- reading the IR


def _short(name: str) -> str:
    return name[len("coreai."):] if name.startswith("coreai.") else name


def _tensor(value: Any, name: str) -> AITensor:
    from coreai._compiler import ir

    t = value.type
    if not ir.RankedTensorType.isinstance(t):
        return AITensor(name, (), str(t))
    rt = ir.RankedTensorType(t)
    shape = tuple(None if rt.is_dynamic_dim(i) else int(rt.get_dim_size(i)) for i in range(rt.rank))
    return AITensor(name, shape, _dtype_name(str(rt.element_type)))


def _constant_ints(value: Any) -> list[int] | None:
    """The integers of a value defined by a ``coreai.constant`` (None if it is not one)."""
    from coreai._compiler import ir

    owner = value.owner
    if not isinstance(owner, ir.Operation) or owner.name != "coreai.constant":
        return None
    attr = owner.attributes["value"]
    if not ir.DenseIntElementsAttr.isinstance(attr):
        return None
    dense = ir.DenseIntElementsAttr(attr)
    if dense.is_splat:
        n = math.prod(ir.RankedTensorType(value.type).shape) if ir.RankedTensorType(value.type).rank else 1
        return [int(dense.get_splat_value().value)] * n
    return [int(v) for v in dense]


def _callee(op: Any) -> str | None:
    match = re.search(r"@([\w.$-]+)", str(op.attributes["callee"])) if "callee" in op.attributes else None
    return match.group(1) if match else None


def _walk(block: Any):
    for item in block.operations:
        op = item.operation
        yield op
        for region in op.regions:
            for inner in region.blocks:
                yield from _walk(inner)


def _read_graph(graph: Any, constants: dict[str, dict[str, int]]) -> tuple[list[AIOp], list[AITensor]]:
    """The graph's non-constant ops (program order, nested regions included) and its outputs; counts constants."""
    block = graph.regions[0].blocks[0]
    counter = 0
    ops: list[AIOp] = []
    outputs: list[AITensor] = []
    for op in _walk(block):
        name = op.name
        if name == "coreai.constant":
            t = _tensor(op.results[0], "const")
            entry = constants.setdefault(t.dtype, {"count": 0, "bytes": 0})
            entry["count"] += 1
            entry["bytes"] += t.nbytes or 0
            continue
        if name == "coreai.output":
            outputs = [_tensor(v, f"output_{i}") for i, v in enumerate(op.operands)]
            continue
        results = []
        for r in op.results:
            results.append(_tensor(r, f"%{counter}"))
            counter += 1
        detail: dict[str, Any] = {}
        short = _short(name)
        if short == "transpose" and len(op.operands) > 1:
            perm = _constant_ints(op.operands[1])
            if perm is not None:
                in_shape = _tensor(op.operands[0], "in").shape
                detail["perm"] = perm
                if all(s is not None for s in in_shape):
                    detail["moves_last_axis"] = bool(moves_last_axis(in_shape, results[0].shape, perm))
        elif short == "softmax" and len(op.operands) > 1:
            axis = _constant_ints(op.operands[1])
            if axis:
                rank = results[0].rank
                detail["axis"] = axis[0] % rank if rank else axis[0]
        elif short == "invoke":
            detail["callee"] = _callee(op)
        ops.append(AIOp(short, tuple(results), detail))
    return ops, outputs


def _graph_inputs(graph: Any) -> list[AITensor]:
    from coreai._compiler import ir

    names = []
    if "arg_attrs" in graph.attributes:
        for attr in ir.ArrayAttr(graph.attributes["arg_attrs"]):
            d = ir.DictAttr(attr)
            names.append(ir.StringAttr(d["coreai.name"]).value if "coreai.name" in d else None)
    args = list(graph.regions[0].blocks[0].arguments)
    return [_tensor(a, names[i] if i < len(names) and names[i] else f"arg{i}") for i, a in enumerate(args)]


def _graph_output_names(graph: Any) -> list[str | None]:
    from coreai._compiler import ir

    names: list[str | None] = []
    if "res_attrs" in graph.attributes:
        for attr in ir.ArrayAttr(graph.attributes["res_attrs"]):
            d = ir.DictAttr(attr)
            names.append(ir.StringAttr(d["coreai.name"]).value if "coreai.name" in d else None)
    return names


def summarize(source: Any, entry: str = "main") -> AIProgramReport:
    """Read a Core AI program and report what it contains (see the module docstring).

    Args:
        source: an ``.aimodel`` path, or a ``coreai.authoring.AIProgram`` in memory (then the
            file size and Apple's statistics are ``None``).
        entry: the function to walk (default ``main``).

    Raises:
        FileNotFoundError: for a missing path.
        ValueError: for a path that is not an ``.aimodel`` (an ``.mlpackage`` is named as such:
            ``ane_vit.analysis`` reads those), or a program without the function ``entry``.
        CoreAIUnavailableError: where Core AI is not installed.
    """
    file_bytes = metadata = storage = compute = distribution = None
    if isinstance(source, (str, os.PathLike)):
        path = check_aimodel(source)
        require_coreai("summarize")
        from coreai.authoring import AIModelAsset

        from .save import read_aimodel_metadata

        try:
            asset = AIModelAsset.load(path)
            program = asset.program
            stats = asset.summary(include_statistics=True)
        except RuntimeError as err:
            raise ValueError(f"Core AI cannot read the program at {os.fspath(source)!r}: {err}") from err
        label, file_bytes, metadata = os.fspath(source), aimodel_nbytes(path), read_aimodel_metadata(path)
        if stats is not None:
            storage = [(str(k), int(v)) for k, v in stats.storage_types]
            compute = [str(k) for k in stats.compute_types]
            distribution = [(str(k), int(v)) for k, v in stats.operation_distribution]
    else:
        require_coreai("summarize")
        from coreai.authoring import AIProgram

        if not isinstance(source, AIProgram):
            raise TypeError(f"expected an .aimodel path or a coreai.authoring.AIProgram, got {type(source).__name__}")
        program, label = source, "AIProgram (in memory)"
    graphs = {}
    for item in program._module._mlir_module.body.operations:  # unversioned IR: see the module docstring
        op = item.operation
        if op.name == "coreai.graph":
            graphs[str(op.attributes["sym_name"]).strip('"')] = op
    if entry not in graphs:
        raise ValueError(f"the program has no function {entry!r}; it has {sorted(graphs)}")
    constants: dict[str, dict[str, int]] = {}
    composites = {}
    for name, graph in graphs.items():
        if name != entry:
            composites[name] = _read_graph(graph, constants)[0]
    ops, outputs = _read_graph(graphs[entry], constants)
    out_names = _graph_output_names(graphs[entry])
    outputs = [AITensor(out_names[i] or t.name, t.shape, t.dtype) if i < len(out_names) else t for i, t in enumerate(outputs)]
    return AIProgramReport(
        source=label, entry=entry, functions=list(graphs), inputs=_graph_inputs(graphs[entry]), outputs=outputs,
        ops=ops, composites=composites, constants=dict(sorted(constants.items())), file_bytes=file_bytes,
        metadata=metadata, storage_types=storage, compute_types=compute, operation_distribution=distribution,
    )

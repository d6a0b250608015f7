"""Apple's Neural Engine rules, checked on the ``torch.export`` graph of any PyTorch model.

Apple's authoring rules for the Neural Engine (apple/coreai-models,
``skills/skills/model-authoring/references/neural_engine_rules.md``, commit 86b363d) say how
to write a PyTorch model that the Neural Engine runs well: rank at most 5, float16 throughout,
a last axis of at least 64 bytes, few reshapes and transposes that touch that axis, 1x1
convolutions instead of ``nn.Linear``, high-level norm ops, softmax over channels, strides
that factor into 2s and 3s, small kernels and dilations, no ``-inf`` in masks, static shapes.
``check_rules(model, example_inputs)`` exports the model with ``torch.export`` (a float16
copy by default, in eval mode) and reads every item of that list that a graph can show,
one rule each (``RULES``). Each finding names the rule, its severity, the module that owns
the node (``stages.2.0.attention``, from the node's ``nn_module_stack``), the node and op,
a message that says what to change, and numbers: a count and the bytes concerned (the
node's output with its last axis padded to 64 bytes as the ANE stores it, and dense).

Only values computed from the inputs count: a node that depends on weights alone (a
``permute`` of a parameter, batch-norm statistics folded into a scale) is folded into a
constant by the converter and never runs.

What a graph cannot tell, each rule says in its ``graph_limit``: which layout ops survive
conversion (the compiler cancels some; read the converted program with
``ane_vit.analysis.analyze``), which ops fall off the Neural Engine (a compile-time fact of
the device: ``ane_vit.device.compute_plan`` on a Mac), whether a converter turns a float
literal into a float16 constant, palettized kernels' stride limits. Nothing here is a
latency. See ``notebooks/11_neural_engine_rules.ipynb``.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .._report import JSONReport

__all__ = [
    "APPLE_RULES",
    "FLOAT16_MAX",
    "LARGE_KERNEL",
    "LARGE_DILATION",
    "Rule",
    "RULES",
    "RuleFinding",
    "RulesReport",
    "check_rules",
]

#: Where the rules come from (cited as ``applecoreaimodelsrules`` in the book).
APPLE_RULES = (
    "Apple, coreai-models: skills/skills/model-authoring/references/neural_engine_rules.md "
    "(commit 86b363d) <https://github.com/apple/coreai-models>"
)
#: Largest finite float16 value: a literal beyond it becomes +-inf in a float16 model.
FLOAT16_MAX = 65504.0
#: Kernels with a side above this are flagged. Apple names no number; its example replaces
#: a 9x9 kernel by two 5x5 ones, so 5 is the largest size it shows as good (our threshold).
LARGE_KERNEL = 5
#: Dilations above this are flagged: Apple factors large dilations into chains of 2s and 3s.
LARGE_DILATION = 3

_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Rule:
    """One item of Apple's list that a ``torch.export`` graph can show.

    ``apple`` names the section of Apple's rules; ``bytes_meaning`` says what a finding's
    bytes are; ``graph_limit`` what the graph cannot tell and where to look instead.
    """

    id: str
    severity: str
    title: str
    apple: str
    bytes_meaning: str
    graph_limit: str = ""


_OUT = "the node's output(s), last axis padded to 64 bytes"
#: The rules, by id, in the order of Apple's list.
RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("rank_above_5", "error", "tensor of rank > 5", "Neural Engine Programming Constraints: max tensor rank 5", _OUT),
        Rule("float32_value", "error", "float32 value in a float16 model", "Supported dtypes: fp16, int8, int16; fp32 falls back to GPU/CPU", _OUT,
             "Apple's list also has ops that upcast inside the converter (its example: exp); in the graph they keep float16: "
             "read the converted program for float32 ops (ane_vit.analysis.analyze, rule float32_compute)."),
        Rule("float_literal", "warning", "Python float literal in arithmetic", "Float32 intermediates: any Python float literal creates an f32 buffer", _OUT,
             "Whether the converter makes the literal a float16 constant (coremltools' float16 pass casts constants) or "
             "an f32 buffer is a fact of the converted program."),
        Rule("narrow_last_axis", "warning", "last axis under 64 bytes", "Tensor memory alignment: at least 32 fp16 elements (64 bytes) on the last axis", _OUT,
             "Intermediates that stay in L2 cache may tolerate smaller widths (Apple); which ones do is not known before compiling."),
        Rule("singleton_last_axis", "warning", "singleton last axis", "Tensor memory alignment: never a singleton last axis (32x memory at fp16)", _OUT,
             "As for narrow_last_axis: L2-resident intermediates may tolerate it."),
        Rule("layout_moves_last_axis", "warning", "reshape/transpose that moves the last axis", "Avoid unnecessary memory copies: reshapes and transposes that touch the width dimension", _OUT,
             "The compiler cancels some layout ops; which ones survive is a fact of the converted program "
             "(ane_vit.analysis.analyze counts the program's layout ops)."),
        Rule("linear_not_conv", "warning", "nn.Linear where a 1x1 conv serves", "Conv2d instead of Linear", _OUT,
             "Whether the converted linear runs on the Neural Engine is a compile-time fact of the device."),
        Rule("decomposed_norm", "warning", "norm written out where a high-level op exists", "Prefer high-level ops (nn.LayerNorm, nn.RMSNorm)", "the norm's input, padded",
             "The converter may reassemble a written-out norm (coremltools fuses LayerNormANE's pattern into one layer_norm op); "
             "Apple says not to rely on it: read the converted program."),
        Rule("softmax_spatial_axis", "warning", "softmax over a spatial axis", "Softmax placement: on the channel dimension", "the softmax's input and output, padded"),
        Rule("fused_attention", "warning", "fused multi-head attention (SDPA)", "Per-head attention: no fused SDPA path on the Neural Engine", _OUT),
        Rule("conv_stride", "warning", "conv stride the Neural Engine maps poorly", "Convolution stride optimization", _OUT,
             "Palettized kernels support strides up to 2 only: compression is not in the graph."),
        Rule("pool_stride", "warning", "pooling stride other than 2 or 4", "Pooling stride", _OUT),
        Rule("large_kernel", "warning", "large convolution kernel", "Large kernel decomposition / stride optimization: avoid large kernels, especially along the width", _OUT),
        Rule("large_dilation", "warning", "large dilation", "Dilated convolution factorization", _OUT),
        Rule("infinite_mask_value", "error", "-inf (or a float16 overflow) in a mask", "Causal mask: NOT float('-inf'); -40000 is representable in fp16", _OUT),
        Rule("dynamic_shape", "error", "dynamic (symbolic) shape", "Fully static shapes: one function per static shape", "0 (a shape, not a tensor)"),
    )
}


@dataclass(frozen=True)
class RuleFinding:
    """One place in a model that breaks one of Apple's rules.

    ``module`` is the dotted path of the innermost module that owns the node (``""`` for
    the model itself) and ``module_type`` its class; ``node`` and ``op`` name the graph
    node and its ATen op. ``count`` is how many times the rule is broken there (literals in
    one op, for instance); ``bytes`` and ``dense_bytes`` the bytes concerned
    (``RULES[rule].bytes_meaning``), padded to 64-byte lines and packed.
    """

    rule: str
    severity: str
    module: str
    module_type: str
    node: str
    op: str
    message: str
    count: int = 1
    bytes: int = 0
    dense_bytes: int = 0


@dataclass
class RulesReport(JSONReport):
    """What ``check_rules`` found in one model: findings, and the facts the rules read."""

    model: str
    dtype: str
    input_shapes: list[list]
    findings: list[RuleFinding] = field(default_factory=list)
    facts: dict[str, int] = field(default_factory=dict)

    def by_rule(self) -> dict[str, dict[str, int]]:
        """Per rule id (every rule, in ``RULES`` order): findings, count and bytes summed."""
        out = {rid: {"findings": 0, "count": 0, "bytes": 0, "dense_bytes": 0} for rid in RULES}
        for f in self.findings:
            row = out[f.rule]
            row["findings"] += 1
            row["count"] += f.count
            row["bytes"] += f.bytes
            row["dense_bytes"] += f.dense_bytes
        return out

    def by_module(self, rule: str | None = None) -> Counter:
        """Findings per module path (of one rule, or of all)."""
        return Counter(f.module or "<model>" for f in self.findings if rule is None or f.rule == rule)

    def of(self, rule: str) -> list[RuleFinding]:
        """The findings of one rule (``KeyError`` naming the known ids for an unknown one)."""
        if rule not in RULES:
            raise KeyError(f"unknown rule {rule!r}; the rules are {list(RULES)}")
        return [f for f in self.findings if f.rule == rule]

    def summary(self) -> dict[str, Any]:
        """JSON-safe totals: findings per severity and per rule (rules without findings left out)."""
        return {
            "findings": len(self.findings),
            "by_severity": dict(Counter(f.severity for f in self.findings)),
            "by_rule": {rid: row for rid, row in self.by_rule().items() if row["findings"]},
            **self.facts,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dtype": self.dtype,
            "input_shapes": self.input_shapes,
            "summary": self.summary(),
            "findings": [asdict(f) for f in self.findings],
        }

    def table(self, examples: int = 3) -> str:
        """Printable text: one block per broken rule with its modules, an example and its limit."""
        lines = [f"Neural Engine rules: {self.model} ({self.dtype}, inputs {self.input_shapes})",
                 f"{len(self.findings)} findings; source: {APPLE_RULES}", ""]
        lines.append(f"{'rule':<24}{'severity':<9}{'findings':>9}{'count':>7}{'kB padded':>11}")
        for rid, row in self.by_rule().items():
            if row["findings"]:
                lines.append(f"{rid:<24}{RULES[rid].severity:<9}{row['findings']:>9}{row['count']:>7}{row['bytes'] / 1e3:>11.1f}")
        for rid in RULES:
            found = self.of(rid)
            if not found:
                continue
            rule = RULES[rid]
            mods = self.by_module(rid)
            where = ", ".join(f"{m} x{n}" if n > 1 else m for m, n in list(mods.items())[:examples])
            lines += ["", f"[{rule.severity}] {rid}: {rule.title} ({rule.apple})",
                      f"    where: {where}" + (f", ... (+{len(mods) - examples} modules)" if len(mods) > examples else ""),
                      f"    e.g. {found[0].node} ({found[0].op}): {found[0].message}"]
            if rule.graph_limit:
                lines.append(f"    not in the graph: {rule.graph_limit}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------- entry point


def _as_inputs(example_inputs: Any) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in example_inputs) and example_inputs:
        return tuple(example_inputs)
    got = type(example_inputs).__name__ if not isinstance(example_inputs, (list, tuple)) else \
        f"{type(example_inputs).__name__} of {[type(t).__name__ for t in example_inputs]}"
    raise TypeError(f"example_inputs must be a tensor or a non-empty tuple of tensors (the model's positional inputs), got {got}")


def check_rules(
    model: nn.Module | torch.export.ExportedProgram,
    example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    dtype: str = "float16",
    dynamic_shapes: Any = None,
    strict: bool = False,
    name: str | None = None,
) -> RulesReport:
    """Check a PyTorch model against Apple's Neural Engine rules, on its ``torch.export`` graph.

    Args:
        model: any ``nn.Module`` (a copy is cast to ``dtype`` and put in eval mode; the
            model passed in is not changed), or an ``ExportedProgram`` you made yourself
            (then ``example_inputs`` is ``None``; it is read as it is, so with
            ``dtype="float16"`` export a float16 copy, or every float32 value is a finding).
        example_inputs: the positional inputs at the one static shape to check (a tensor or
            a tuple); floating inputs are cast to ``dtype``.
        dtype: ``"float16"`` (the Neural Engine's float precision: float32 values are findings)
            or ``"float32"``. The 64-byte rule counts elements of the tensors' own dtype.
        dynamic_shapes: passed to ``torch.export.export``; symbolic axes are findings.
        strict: ``torch.export``'s strict mode.
        name: a label for the report (default: the model's class name).

    Returns:
        a ``RulesReport``; ``report.findings`` lists every ``RuleFinding``, ``report.table()``
        prints them by rule, ``report.by_rule()`` counts them.

    Raises:
        TypeError: ``model`` is not a module or exported program, or ``example_inputs`` not
            tensors.
        ValueError: an unknown ``dtype``, or ``example_inputs`` given with an exported program.
        RuntimeError: ``torch.export`` failed (its error is chained and quoted).

    Shapes: ``example_inputs``: any static shapes the model accepts, e.g. ``x: (1, 3, H, W)``.

    Example, on a module of your own::

        from ane_vit.analysis import check_rules

        report = check_rules(my_model, torch.rand(1, 3, 224, 224))
        print(report.table())                    # per rule: where, an example, what to change
        for f in report.of("layout_moves_last_axis"):
            print(f.module, f.op, f.bytes)       # module path, ATen op, padded bytes
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    torch_dtype = _DTYPES[dtype]
    if isinstance(model, torch.export.ExportedProgram):
        if example_inputs is not None:
            raise ValueError("example_inputs must be None when model is an ExportedProgram (its inputs are fixed at export)")
        ep, module = model, None
        label = name or "ExportedProgram"
        shapes = [list(n.meta["val"].shape) for n in ep.graph.nodes
                  if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs and isinstance(n.meta.get("val"), torch.Tensor)]
    elif isinstance(model, nn.Module):
        inputs = _as_inputs(example_inputs)
        label = name or type(model).__name__
        module = copy.deepcopy(model).eval()
        if torch_dtype != torch.float32:
            module = module.to(torch_dtype)
        inputs = tuple(t.to(torch_dtype) if t.is_floating_point() else t for t in inputs)
        try:
            ep = torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes, strict=strict)
        except Exception as err:
            raise RuntimeError(f"check_rules reads the torch.export graph, and torch.export failed on {label}: "
                               f"{type(err).__name__}: {str(err)[:500]}") from err
        shapes = [list(t.shape) for t in inputs]
    else:
        raise TypeError(f"model must be a torch.nn.Module or a torch.export.ExportedProgram, got {type(model).__name__}")
    from .graph_checks import run_checks  # here, not at the top: graph_checks imports this module

    modules = {path: type(m).__name__ for path, m in module.named_modules()} if module is not None else None
    findings, facts = run_checks(ep, torch_dtype, modules)
    shapes = [[s if isinstance(s, int) else str(s) for s in shape] for shape in shapes]
    return RulesReport(label, dtype, shapes, findings, facts)

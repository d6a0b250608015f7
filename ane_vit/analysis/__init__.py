"""What a converted Core ML program contains: facts about the program, not latency.

``analyze(model_or_path)`` reads an ML Program (an ``MLModel`` in memory, a saved
``.mlpackage``, or a MIL ``Program``) and reports, for every op, its output shapes, ranks
and dtypes; activation bytes stored densely and with the last axis padded to 64 bytes as
the ANE stores it; weight bytes, including the weights a compressed program stores behind
``constexpr_*`` ops (bytes stored and expanded, and the method: ``CompressedWeight``); FLOPs
of conv, linear, matmul and einsum; the layout ops
and the bytes they move, split into those that move the last (width) axis and those that
keep it; and ANE-readiness findings, each with its reason and a citation from
``ane_vit/data/ane_ops.json``.

Padded bytes come as two bounds. The upper bound pads every op output to 64-byte rows
(``activation_bytes_padded``); the lower bound pads only the program's outputs and counts
the intermediates dense (``activation_bytes_padded_lower``): Apple requires 64-byte rows for
a model's inputs and outputs, while intermediates that stay in the L2 cache "may tolerate
smaller widths" (Apple's Neural Engine rules, apple/coreai-models
``skills/skills/model-authoring/references/neural_engine_rules.md``, commit 86b363d). Which
intermediates stay there is not known before the compiler runs, so the truth lies between
the two. The same rules call reshapes and transposes that touch the width "especially
expensive"; ``OpInfo.moves_width`` marks them (``ane_vit.layout.moves_last_axis``). Works on any OS: coremltools reads the program without
the Core ML runtime. Nothing here is a latency: a finding says a program is shaped against
the Neural Engine's documented (or, where marked, inferred) constraints, not how fast it runs.

Command line: ``python -m ane_vit.analysis model.mlpackage [--json] [--top N]``.
See ``notebooks/06_export_and_inspection.ipynb``.

Before conversion, ``check_rules(model, example_inputs)`` reads Apple's Neural Engine rules
off the ``torch.export`` graph of any PyTorch model (``python -m ane_vit.analysis --rules
--arch NAME``); see ``notebooks/11_neural_engine_rules.ipynb``.
"""

# The public face of the analysis family; the code lives in one module per concept:
#   program  analyze, op_histogram, the report's data classes and the readiness rules
#   plots    charts of one or several reports
#   rules    check_rules: Apple's Neural Engine rules on the torch.export graph of a PyTorch model
#            (graph_checks reads the graph; rules_survey runs it on every model the book ships)
#   cli      the command line (python -m ane_vit.analysis, run by __main__.py)
from __future__ import annotations

from . import program as _program
from . import rules as _rules
from .cli import main
from .program import (
    CompressedWeight,
    Finding,
    ModelLike,
    OpInfo,
    ProgramReport,
    TensorInfo,
    analyze,
    ane_rules,
    op_histogram,
)
from .rules import Rule, RuleFinding, RulesReport, check_rules

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
    "main",
    "APPLE_RULES",
    "RULES",
    "Rule",
    "RuleFinding",
    "RulesReport",
    "check_rules",
]

# Bound here, not only imported: the API page reads these ``#:`` comments from this file.
#: Ops that only move or regroup data (no arithmetic). Their output bytes are what they move.
LAYOUT_OPS: frozenset[str] = _program.LAYOUT_OPS
#: Ops whose FLOPs are counted (as 2 x multiply-accumulates); all others count 0.
FLOP_OPS: frozenset[str] = _program.FLOP_OPS
#: Largest axis length the ANE compiler accepts for the width/height/depth of a tensor.
MAX_AXIS: int = _program.MAX_AXIS
#: A tensor counts as large from this many padded bytes (our threshold, see ane_ops.json).
LARGE_TENSOR_BYTES: int = _program.LARGE_TENSOR_BYTES
#: A large tensor is misaligned when padding is more than this share of its padded buffer.
MAX_PADDING_FRACTION: float = _program.MAX_PADDING_FRACTION
#: Apple's Neural Engine rules that ``check_rules`` reads from a ``torch.export`` graph, by id.
RULES: dict[str, Rule] = _rules.RULES
#: Where those rules come from (Apple's coreai-models repository, at the commit read).
APPLE_RULES: str = _rules.APPLE_RULES

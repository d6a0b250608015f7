"""What a converted Core ML program contains: facts about the program, not latency.

Works on any OS: coremltools exposes the converted MIL program without the Core ML
runtime.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["op_histogram"]


def _main_function(model):
    prog = getattr(model, "_mil_program", None)
    if prog is None:
        raise ValueError("this model carries no MIL program; convert it with ane_vit.export.to_mlprogram (convert_to='mlprogram')")
    return prog.functions["main"]


def op_histogram(model, include_const: bool = False) -> Counter:
    """Count the ops of a converted ML Program by type (``const`` ops left out by default)."""
    ops = _main_function(model).operations
    return Counter(op.op_type for op in ops if include_const or op.op_type != "const")

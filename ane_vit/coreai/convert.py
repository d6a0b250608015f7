"""PyTorch to Core AI in memory: ``torch.export`` -> decompositions -> (float16 cast) -> ``AIProgram``.

The route of Apple's coreai-torch documentation: ``torch.export.export(model.eval(), (x,))``
with torch.export's defaults, ``run_decompositions(coreai_torch.get_decomp_table())`` (the
ATen decompositions the converter expects), optionally
``coreai_opt.casting.cast_to_16_bit_precision`` (weights, input and every op that is safe in
float16 move to float16; the program's input and output become float16), then
``TorchConverter().add_exported_program(...).to_coreai()``. ``to_coreai`` returns a program
that is already optimised (coreai-torch 0.4.3; ``AIProgram.optimize()``, which Apple's skill
file still shows, does not exist in coreai-core 1.0.0b3).

The Core AI packages are imported inside the functions (``require_coreai`` first), so
``import ane_vit.coreai`` works where the stack is not installed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .quiet import drop_stdout_lines
from .stack import require_coreai

__all__ = ["PRECISIONS", "to_exported_program", "to_aiprogram", "output_names_for"]

#: What ``precision=`` accepts: the program's storage and compute type.
PRECISIONS = ("float32", "float16")


def _check_inputs(model: Any, example_input: Any, precision: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    if example_input.dtype != torch.float32:
        raise TypeError(f"example_input must be float32 (the model's dtype; precision= sets the program's), "
                        f"got {example_input.dtype}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")


def to_exported_program(model: nn.Module, example_input: torch.Tensor, *,
                        precision: str = "float32") -> torch.export.ExportedProgram:
    """``torch.export`` the model in eval mode, decompose it for coreai-torch, cast to float16 if asked.

    The model is not changed: ``cast_to_16_bit_precision`` puts new float16 tensors in the
    exported program's state dict instead of converting the model's parameters (which that
    dict holds right after ``torch.export``) in place; a test keeps it so.

    Shapes: ``example_input: (B, C, H, W)`` (any fixed shape); the program keeps it.

    Raises:
        TypeError: for a model that is not an ``nn.Module`` or an input that is not a float32 tensor.
        ValueError: for an unknown ``precision``.
        CoreAIUnavailableError: where Core AI is not installed.
    """
    _check_inputs(model, example_input, precision)
    require_coreai("to_exported_program")
    import coreai_torch

    model.eval()
    with warnings.catch_warnings():
        # torch 2.13's run_decompositions deep-copies its own TreeSpecs and trips its own
        # "isinstance(treespec, LeafSpec) is deprecated" FutureWarning: torch's, not the model's.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        ep = torch.export.export(model, (example_input,))
        ep = ep.run_decompositions(coreai_torch.get_decomp_table())
    if precision == "float16":
        from coreai_opt.casting import cast_to_16_bit_precision

        ep = cast_to_16_bit_precision(ep)
    return ep


def output_names_for(outputs: Any, output_names: Sequence[str] | None = None) -> list[str]:
    """Names for the model's outputs: ``output_names`` checked against their count, or
    ``output`` for one tensor and ``output_0, output_1, ...`` for several."""
    n = 1 if isinstance(outputs, torch.Tensor) else len(outputs)
    if output_names is None:
        return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]
    names = list(output_names)
    if len(names) != n or len(set(names)) != n or not all(isinstance(s, str) and s for s in names):
        raise ValueError(f"output_names must be {n} distinct non-empty strings (the model returns {n} "
                         f"tensor(s)), got {names!r}")
    return names


def to_aiprogram(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    precision: str = "float32",
    input_name: str = "x",
    output_names: Sequence[str] | None = None,
) -> Any:
    """Convert a PyTorch model to a Core AI ``AIProgram`` in memory (the module docstring's route).

    Args:
        model: a module that ``torch.export`` can export (every model of ane_vit can).
        example_input: a float32 tensor whose shape the program fixes.
        precision: ``"float32"`` or ``"float16"`` (``cast_to_16_bit_precision``: the input and
            outputs become float16 too).
        input_name: the program's input name.
        output_names: one name per output (default ``output`` or ``output_0, output_1, ...``).

    Shapes: ``example_input: (B, C, H, W)``; outputs as the model's.

    Returns:
        a ``coreai.authoring.AIProgram`` (function ``main``), as coreai-torch returns it.
    """
    _check_inputs(model, example_input, precision)
    if not isinstance(input_name, str) or not input_name:
        raise ValueError(f"input_name must be a non-empty string, got {input_name!r}")
    with torch.no_grad():
        outputs = model.eval()(example_input)
    names = output_names_for(outputs, output_names)
    ep = to_exported_program(model, example_input, precision=precision)
    import coreai_torch

    with drop_stdout_lines():  # coreai-torch's banner; anything else is written back
        converter = coreai_torch.TorchConverter()
        return converter.add_exported_program(ep, input_names=[input_name], output_names=names).to_coreai()

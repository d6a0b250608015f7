"""Convert PyTorch modules to a Core ML ML Program.

Conversion runs on any OS (coremltools converts on Linux); running the program needs
macOS. ``coremltools`` is imported inside the functions so that ``import ane_vit`` stays
fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = ["to_mlprogram"]


def to_mlprogram(
    module: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    input_names: Sequence[str] | None = None,
    compute_precision: str = "float16",
    minimum_deployment_target: str = "iOS16",
):
    """Trace ``module`` on ``example_inputs`` and convert it to an ML Program (in memory).

    Args:
        module: any traceable module; it is put in eval mode.
        example_inputs: one tensor or a sequence of tensors; their shapes become the
            program's fixed input shapes.
        input_names: names of the inputs (default ``x``, ``x1``, ...).
        compute_precision: ``"float16"`` (what the ANE computes in) or ``"float32"``.
        minimum_deployment_target: a ``coremltools.target`` name, e.g. ``"iOS16"``.

    Returns:
        a ``coremltools.models.MLModel``.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    import coremltools as ct

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    if input_names is None:
        input_names = ["x"] + [f"x{i}" for i in range(1, len(example_inputs))]
    if len(input_names) != len(example_inputs):
        raise ValueError(f"got {len(input_names)} input names for {len(example_inputs)} inputs")
    precisions = {"float16": ct.precision.FLOAT16, "float32": ct.precision.FLOAT32}
    if compute_precision not in precisions:
        raise ValueError(f"compute_precision must be one of {sorted(precisions)}, got {compute_precision!r}")
    try:
        target = getattr(ct.target, minimum_deployment_target)
    except AttributeError:
        raise ValueError(f"unknown minimum_deployment_target {minimum_deployment_target!r}; e.g. 'iOS16', 'macOS13'") from None
    module = module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example_inputs)
    return ct.convert(
        traced,
        convert_to="mlprogram",
        inputs=[ct.TensorType(name=n, shape=tuple(t.shape)) for n, t in zip(input_names, example_inputs)],
        compute_precision=precisions[compute_precision],
        minimum_deployment_target=target,
    )

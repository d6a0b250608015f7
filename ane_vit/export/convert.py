"""Tracing and conversion of a PyTorch module to an in-memory Core ML ML Program.

Holds ``to_mlprogram`` and the conversion defaults (``DEFAULT_DEPLOYMENT_TARGET``, ImageNet's
``IMAGENET_MEAN``/``IMAGENET_STD``); ``ane_vit.export`` re-exports them and explains the
choice of deployment target. ``coremltools`` is imported inside ``to_mlprogram``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

DEFAULT_DEPLOYMENT_TARGET = "iOS16"
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class _ExportWrapper(nn.Module):
    """Adapts a module for tracing: optional per-channel ``1/std`` on the input, tuple outputs.

    Core ML's ``ImageType`` applies one scale to all channels plus a per-channel bias, so
    ``(pixel/255 - mean) / std`` is ``ImageType(scale=1/255, bias=-mean)`` followed by this
    per-channel multiply (one ``mul`` op in the program).

    Shapes: ``x: (B, 3, H, W) -> whatever module returns`` (a list becomes a tuple).
    """

    def __init__(self, module: nn.Module, inv_std: Sequence[float] | None = None):
        super().__init__()
        self.module = module
        if inv_std is None:
            self.inv_std = None
        else:
            self.register_buffer("inv_std", torch.tensor(inv_std, dtype=torch.float32).reshape(1, -1, 1, 1))  # (1, 3, 1, 1)

    def forward(self, *inputs: torch.Tensor):
        if self.inv_std is not None:
            inputs = (inputs[0] * self.inv_std,)  # (B, 3, H, W) * (1, 3, 1, 1)
        out = self.module(*inputs)
        return tuple(out) if isinstance(out, list) else out


def _flatten_outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise TypeError(f"the module must return a tensor or a list/tuple of tensors, got {type(out).__name__}")


def _check_image_normalization(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"image_mean and image_std need 3 values (R, G, B), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"image_std must be positive, got {tuple(std)}")


def to_mlprogram(
    module: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    input_names: Sequence[str] | None = None,
    compute_precision: str = "float16",
    minimum_deployment_target: str = DEFAULT_DEPLOYMENT_TARGET,
    *,
    output_names: Sequence[str] | None = None,
    image_input: bool = False,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    enumerated_shapes: Sequence[Sequence[int]] | None = None,
    check_shapes: bool = True,
):
    """Trace ``module`` on ``example_inputs`` and convert it to an ML Program (in memory).

    Args:
        module: any traceable module; it is put in eval mode. It may return a tensor or a
            list/tuple of tensors (each becomes one program output).
        example_inputs: one tensor or a sequence of tensors; their shapes become the
            program's fixed input shapes.
        input_names: names of the inputs (default ``x``, ``x1``, ...).
        compute_precision: ``"float16"`` (what the ANE computes in) or ``"float32"``.
        minimum_deployment_target: a ``coremltools.target`` name, e.g. ``"iOS16"``.
        output_names: names of the outputs (default: the converter's names).
        image_input: make the (single, 3-channel NCHW) input an RGB image; the program then
            computes ``(pixel / 255 - image_mean) / image_std`` itself.
        image_mean, image_std: per-channel normalisation used with ``image_input``
            (ImageNet's by default).
        enumerated_shapes: 2 to 128 shapes the (single) input may take, the example's
            among them (it is the default); ``None`` fixes the example's shape. Refused
            (``ValueError``) for a module with a ``WindowAttention`` whose PE type bakes a
            token count (``LePE_ADD``, ``RPE``, ``SINGLE_HEAD_RPE``).
        check_shapes: with ``enumerated_shapes``, fix the converted program at each shape
            (``ane_vit.export.shapes.check_materializes``) and raise ``ValueError`` naming a
            shape it cannot take (a constant traced at the example's size). ``False`` skips
            this and the PE-type check: the program is then converted as asked, to study what
            breaks (``ane_vit.export.shapes.materialization_errors``).

    Shapes: ``example_inputs: (B, C, H, W)`` (any fixed shape; ``(B, 3, H, W)`` for images).

    Returns:
        a ``coremltools.models.MLModel``.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    import coremltools as ct

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    if not example_inputs or not all(isinstance(t, torch.Tensor) for t in example_inputs):
        raise TypeError(f"example_inputs must be a tensor or a non-empty sequence of tensors, got {example_inputs!r:.80}")
    if input_names is None:
        input_names = ["x"] + [f"x{i}" for i in range(1, len(example_inputs))]
    if len(input_names) != len(example_inputs):
        raise ValueError(f"got {len(input_names)} input names for {len(example_inputs)} inputs")
    precisions = {"float16": ct.precision.FLOAT16, "float32": ct.precision.FLOAT32}
    if compute_precision not in precisions:
        raise ValueError(f"compute_precision must be one of {sorted(precisions)}, got {compute_precision!r}")
    try:
        target = getattr(ct.target, minimum_deployment_target)
    except (AttributeError, TypeError):
        raise ValueError(f"unknown minimum_deployment_target {minimum_deployment_target!r}; e.g. 'iOS16', 'macOS13'") from None

    input_shape = tuple(example_inputs[0].shape)
    if enumerated_shapes is not None:
        from .shapes import check_enumerated_shapes, fixed_size_layers

        if len(example_inputs) != 1:
            raise ValueError(f"enumerated_shapes needs a module with one input, got {len(example_inputs)} inputs")
        shapes = check_enumerated_shapes(enumerated_shapes, input_shape)
        fixed = fixed_size_layers(module) if check_shapes else []
        if fixed:
            names = ", ".join(f"{n} ({pe.name})" for n, pe in fixed[:3]) + (f" and {len(fixed) - 3} more" if len(fixed) > 3 else "")
            raise ValueError(
                f"cannot convert for several input sizes: {len(fixed)} attention layer(s) use a position embedding "
                f"sized for one token count: {names}. Use PEType.LePE_FUSED or PEType.NONE, or one program per size"
            )
        input_shape = ct.EnumeratedShapes(shapes=shapes, default=input_shape)

    inv_std = None
    if image_input:
        shape = tuple(example_inputs[0].shape)
        if len(example_inputs) != 1 or len(shape) != 4 or shape[1] != 3:
            raise ValueError(
                f"image_input needs exactly one input of shape (B, 3, H, W), got shapes {[tuple(t.shape) for t in example_inputs]}"
            )
        if enumerated_shapes is not None and any(s[1] != 3 for s in shapes):
            raise ValueError(f"image_input needs every enumerated shape to be (B, 3, H, W), got {shapes}")
        _check_image_normalization(image_mean, image_std)
        inv_std = [1.0 / float(s) for s in image_std]
        inputs = [
            ct.ImageType(
                name=input_names[0],
                shape=input_shape,
                scale=1.0 / 255.0,  # one scale for all channels: pixels to [0, 1]
                bias=[-float(m) for m in image_mean],  # per channel: minus the mean
                color_layout=ct.colorlayout.RGB,
            )
        ]
    else:
        # Integer inputs (e.g. indices) stay integers; anything else is a float input.
        inputs = [
            ct.TensorType(name=n, shape=input_shape if i == 0 else tuple(t.shape), dtype=np.int32 if not t.is_floating_point() else None)
            for i, (n, t) in enumerate(zip(input_names, example_inputs))
        ]

    wrapper = _ExportWrapper(module.eval(), inv_std).eval()
    outputs = None
    if output_names is not None:
        with torch.no_grad():
            n_out = len(_flatten_outputs(wrapper(*example_inputs)))
        output_names = list(output_names)
        if len(output_names) != n_out:
            raise ValueError(f"got {len(output_names)} output names {output_names} for {n_out} outputs")
        clash = set(output_names) & set(input_names)
        if len(set(output_names)) != len(output_names) or clash:
            raise ValueError(f"input and output names must be unique, got inputs {list(input_names)} and outputs {output_names}")
        outputs = [ct.TensorType(name=n) for n in output_names]
    with torch.no_grad(), warnings.catch_warnings():
        # coremltools converts TorchScript; recent torch marks jit.trace deprecated: nothing to act on here.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated", category=DeprecationWarning)
        traced = torch.jit.trace(wrapper, example_inputs)
    mlmodel = ct.convert(
        traced,
        convert_to="mlprogram",
        inputs=inputs,
        outputs=outputs,
        compute_precision=precisions[compute_precision],
        minimum_deployment_target=target,
    )
    if enumerated_shapes is not None and check_shapes:
        from .shapes import check_materializes

        traced_at = tuple(example_inputs[0].shape)  # the program was traced at it: nothing to check
        check_materializes(mlmodel, input_names[0], [s for s in shapes if tuple(s) != traced_at])
    return mlmodel

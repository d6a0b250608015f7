"""Several input sizes in one program: checks for ``to_mlprogram(..., enumerated_shapes=...)``.

Core ML accepts up to 128 enumerated shapes for one input (coremltools, "Flexible Input
Shapes"). Whether the *model* can take them is another matter: a layer that bakes a
constant sized for the traced token count (the ``abs_pe`` table of ``LePE_ADD``, the
relative-position bias of ``RPE``/``SINGLE_HEAD_RPE``) converts without complaint and then
cannot run at any other size. ``fixed_size_layers`` finds those layers before conversion;
``check_materializes`` fixes the converted program at each enumerated shape (coremltools'
``materialize_dynamic_shape_mlmodel``, the same type inference Core ML applies) and names the
first shape the program cannot take. See ``notebooks/09_deployment_details.ipynb``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence

from torch import nn

from ..attention import PEType, WindowAttention

__all__ = [
    "MAX_ENUMERATED_SHAPES",
    "FIXED_SIZE_PE_TYPES",
    "check_enumerated_shapes",
    "fixed_size_layers",
    "materialization_errors",
    "check_materializes",
]

#: Core ML's limit on the number of enumerated shapes of one input.
MAX_ENUMERATED_SHAPES = 128
#: PE types whose parameters or constants depend on the number of tokens.
FIXED_SIZE_PE_TYPES = frozenset({PEType.LePE_ADD, PEType.RPE, PEType.SINGLE_HEAD_RPE})


def check_enumerated_shapes(shapes: Sequence[Sequence[int]], default: Sequence[int]) -> list[tuple[int, ...]]:
    """Validate enumerated input shapes; returns them as tuples of ints.

    ``default`` (the traced example's shape) must be one of them; there must be 2 to 128
    distinct shapes, each of the default's rank, all sizes positive ints.

    Raises:
        ValueError: naming the offending shape(s).
    """
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Sequence):
        raise ValueError(f"enumerated_shapes must be a list of shapes, got {shapes!r:.80}")
    default = tuple(int(s) for s in default)
    out: list[tuple[int, ...]] = []
    for shape in shapes:
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
        ):
            raise ValueError(f"each enumerated shape must be a tuple of positive ints, got {shape!r}")
        if len(shape) != len(default):
            raise ValueError(f"enumerated shape {tuple(shape)} has rank {len(shape)}, the example input {default} rank {len(default)}")
        out.append(tuple(shape))
    dupes = sorted({s for s in out if out.count(s) > 1})
    if dupes:
        raise ValueError(f"enumerated_shapes lists {dupes} more than once")
    if len(out) < 2:
        raise ValueError(f"enumerated_shapes needs at least 2 shapes (one shape is a fixed shape: leave it out), got {out}")
    if len(out) > MAX_ENUMERATED_SHAPES:
        raise ValueError(f"Core ML allows at most {MAX_ENUMERATED_SHAPES} enumerated shapes per input, got {len(out)}")
    if default not in out:
        raise ValueError(f"the example input's shape {default} must be one of the enumerated shapes {out} (it becomes the default)")
    return out


def fixed_size_layers(module: nn.Module) -> list[tuple[str, PEType]]:
    """``(name, pe_type)`` of every ``WindowAttention`` in ``module`` whose PE type bakes a token count."""
    return [
        (name or type(module).__name__, m.pe_type)
        for name, m in module.named_modules()
        if isinstance(m, WindowAttention) and m.pe_type in FIXED_SIZE_PE_TYPES
    ]


def materialization_errors(mlmodel, input_name: str, shapes: Sequence[Sequence[int]]) -> dict[tuple[int, ...], str | None]:
    """For each shape: ``None`` if the program can be fixed at it, else the converter's message.

    Each shape is materialized with ``coremltools.utils.materialize_dynamic_shape_mlmodel``
    (the same type inference Core ML applies), in a temporary folder.
    """
    import coremltools as ct

    out: dict[tuple[int, ...], str | None] = {}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # reloading a flexible package: coremltools notes the (intended) flexible dimensions
        warnings.filterwarnings("ignore", message="Some dimensions in the input shape are unknown", category=UserWarning)
        source = os.path.join(folder, "flexible.mlpackage")
        mlmodel.save(source)
        for i, shape in enumerate(shapes):
            dynamic = ct.models.MLModel(source, skip_model_load=True)  # fresh: materializing edits the program
            try:
                ct.utils.materialize_dynamic_shape_mlmodel(
                    dynamic, {f"shape_{i}": {input_name: tuple(shape)}}, os.path.join(folder, f"fixed_{i}.mlpackage")
                )
                out[tuple(shape)] = None
            except Exception as err:  # coremltools raises ValueError or AssertionError from its passes
                out[tuple(shape)] = str(err)
    return out


def check_materializes(mlmodel, input_name: str, shapes: Sequence[Sequence[int]]) -> None:
    """Raise ``ValueError`` naming the first shape at which the program cannot be fixed.

    A shape fails when an op's constant does not fit it (``materialization_errors``).
    ``to_mlprogram`` leaves out the shape it traced at (it always fits), halving the cost of
    a two-size export.
    """
    if not shapes:
        return
    for shape, error in materialization_errors(mlmodel, input_name, shapes).items():
        if error is not None:
            raise ValueError(
                f"the converted program cannot take the enumerated shape {shape}: {error} "
                "Either the model does not accept this size at all (check it by building the model for it), "
                "or a layer bakes a constant sized for the traced input (e.g. an RPE bias or LePE_ADD's abs_pe)."
            )

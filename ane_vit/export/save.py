"""Save a model as a ``.mlpackage``: ``export_model`` (any module) and ``export_moat`` (a MOAT
by architecture name, under the seed's file-name scheme). Re-exported by ``ane_vit.export``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._interrupt import check_interrupted
from ..attention import PEType
from ..moat import ATTENTION_MODES
from .convert import (
    DEFAULT_DEPLOYMENT_TARGET,
    IMAGENET_MEAN,
    IMAGENET_STD,
    _flatten_outputs,
    to_mlprogram,
)
from .metadata import _set_metadata
from .paths import _check_shape, _check_target, _resolve_path, moat_filename

__all__ = ["export_model", "export_moat", "resolve_target", "save_program"]

# --------------------------------------------------------------------------- export


def export_model(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike | None = None,
    *,
    config: Any = None,
    input_name: str = "x",
    output_names: Sequence[str] | None = None,
    image_input: bool = False,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    minimum_deployment_target: str = DEFAULT_DEPLOYMENT_TARGET,
    compute_precision: str = "float16",
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
    enumerated_shapes: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Convert ``model`` to a float16 ML Program with a fixed input shape and save it.

    Args:
        model: any traceable module returning a tensor or a list/tuple of tensors.
        example_input: the input whose shape the program fixes.
        path: a ``.mlpackage`` path, or a folder (the file name is then
            ``default_filename(config, shape)`` for a MOAT config, else
            ``{ModelClass}_batch{B}_{H}x{W}.mlpackage``); default folder ``exported_model``.
        config: the architecture config (a dataclass); stored as JSON in the metadata
            (enums by name) and used for the default file name.
        input_name: name of the program input.
        output_names: one name per output (default ``output`` for one output, else
            ``output_0, output_1, ...``; ``export_moat`` uses ``stage_0..3`` or ``logits``).
        image_input: take an RGB image and normalise it inside the program with
            ``image_mean``/``image_std`` (ImageNet's by default), pixels in 0..255.
        minimum_deployment_target: ``"iOS16"`` (= ``"macOS13"``) by default: see the module
            docstring for why.
        compute_precision: ``"float16"`` (ANE) or ``"float32"``.
        overwrite: replace an existing package; without it an existing path raises
            ``FileExistsError`` (checked before converting, as is a folder we cannot write).
            The package is written to a temporary folder beside it and renamed into place,
            so an interrupted overwrite keeps the old package; the output folder is
            created only then.
        metadata: extra entries; ``author``, ``short_description``, ``version``, ``license``
            set the standard fields, other keys are added to the user-defined metadata.
        enumerated_shapes: several input shapes for one program (``example_input``'s
            among them, the default): see ``to_mlprogram``; recorded in the metadata as
            ``ane_vit.enumerated_shapes``.

    Shapes: ``example_input: (B, C, H, W)`` (or any fixed shape for a tensor input).

    Returns:
        the path of the saved ``.mlpackage``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    shape = tuple(example_input.shape)
    target = _resolve_path(path, model, config, shape)
    _check_target(target, overwrite)

    with torch.no_grad():
        outs = _flatten_outputs(model.eval()(example_input))
    if output_names is None:
        output_names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    mlmodel = to_mlprogram(
        model,
        example_input,
        [input_name],
        compute_precision,
        minimum_deployment_target,
        output_names=output_names,
        image_input=image_input,
        image_mean=image_mean,
        image_std=image_std,
        enumerated_shapes=enumerated_shapes,
    )
    _set_metadata(
        mlmodel,
        model=model,
        config=config,
        input_name=input_name,
        shape=shape,
        output_shapes={n: tuple(t.shape) for n, t in zip(output_names, outs)},
        image_input=image_input,
        image_mean=image_mean,
        image_std=image_std,
        compute_precision=compute_precision,
        minimum_deployment_target=minimum_deployment_target,
        metadata=metadata,
    )
    if enumerated_shapes is not None:
        listed = [list(s) for s in enumerated_shapes]
        mlmodel.user_defined_metadata["ane_vit.enumerated_shapes"] = json.dumps(listed)
        mlmodel.short_description = mlmodel.short_description.replace(
            f"fixed input {input_name} {shape}", f"input {input_name} of {len(listed)} enumerated shapes (default {shape})"
        )
    if target.exists() and not overwrite:  # appeared during the conversion
        raise FileExistsError(f"{target} already exists; pass overwrite=True / --overwrite to replace it")
    _save_atomically(mlmodel, target)
    return target


def resolve_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The one way our code turns a user's output path into the path it writes.

    ``~`` is expanded and the path made absolute ONCE, here, so the existence check and the
    write look at the same place (coremltools' ``save`` expands ``~`` itself: checking the
    literal path and then saving would replace ``$HOME/...`` unasked). Then the target is
    checked before any slow work: ``.mlpackage`` suffix, existing target without
    ``overwrite``, a folder that cannot be written (``_check_target``).

    Raises:
        ValueError: for a path that does not end in ``.mlpackage``.
        FileExistsError: if the target exists and ``overwrite`` is false.
        OSError: if the output folder cannot be written.
    """
    target = Path(os.path.expanduser(os.fspath(path))).absolute()
    if target.suffix != ".mlpackage":
        raise ValueError(f"an ML Program is saved as a .mlpackage folder, got {os.fspath(path)!r}")
    _check_target(target, overwrite)
    return target


def save_program(mlmodel, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save a converted (or compressed) ML Program atomically; the helper every command uses.

    The path goes through ``resolve_target`` (``~`` expanded once, checks first); the save
    goes to a hidden temporary folder next to the target and is renamed into place only when
    complete (``_save_atomically``): an interrupted or failed save leaves an existing program
    as it was and no half-written folder. Returns the absolute path written.
    """
    target = resolve_target(path, overwrite)
    _save_atomically(mlmodel, target)
    return target


def _save_package(mlmodel, path: Path) -> None:
    """coremltools' save (its own step, so a test can interrupt it)."""
    mlmodel.save(str(path))


def _save_atomically(mlmodel, target: Path) -> None:
    """Save into a hidden temporary folder next to ``target``, then rename into place.

    coremltools' own save deletes an existing package before it copies the new one in, so
    an interruption during an overwrite would lose the old model. Here the old package is
    only moved aside (and deleted) once the new one is complete; both renames stay inside
    one folder, hence one file system. An interrupted or failed save leaves the old
    package as it was and no temporary folder behind. The output folder is created here,
    at the last moment, and removed again if this save fails and leaves it empty.
    A Ctrl-C that a dependency swallowed earlier (``ane_vit._interrupt``) stops it before
    anything is written, and one swallowed during the copy before the rename.
    """
    check_interrupted()
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]  # deepest first
    target.parent.mkdir(parents=True, exist_ok=True)
    saved = False
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        new, old = staging / target.name, staging / "replaced"
        _save_package(mlmodel, new)
        check_interrupted()
        if target.exists() or target.is_symlink():
            os.rename(target, old)  # the old package (or file) moves aside, still whole
            try:
                os.rename(new, target)
            except BaseException:
                os.rename(old, target)  # put it back
                raise
        else:
            os.rename(new, target)
        saved = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the partial new package, or the replaced old one
        for folder in made if not saved else ():
            try:
                folder.rmdir()  # only if still empty
            except OSError:
                break


def export_moat(
    base_arch: str = "tiny-moat-0",
    shape: Sequence[int] = (1, 3, 256, 256),
    attention_mode: str = "global",
    pe_type: PEType | str = PEType.SINGLE_HEAD_RPE,
    split_head: bool = True,
    output_dir: str | os.PathLike = "exported_model",
    *,
    local_window_size: Sequence[int] | None = None,
    channel_buffer_align: bool = True,
    num_classes: int | None = None,
    overwrite: bool = False,
    image_input: bool = False,
    enumerated_shapes: Sequence[Sequence[int]] | None = None,
    **export_kwargs: Any,
) -> Path:
    """Build a MOAT model (``ane_vit.moat.build_model``) and export it as the seed named it.

    The file is ``output_dir / default_filename(config, shape)``. Outputs are named
    ``stage_0..stage_3`` (the four NCHW stage maps) or ``logits`` with ``num_classes``.
    ``local_window_size=None`` uses ``build_model``'s default, which for 256 and 512 inputs
    is the 8x8 window the seed's ``export.py`` passed explicitly. ``channel_buffer_align``
    (widths rounded up to multiples of 32) is on by default; the seed's ``export.py``
    turned it off, which changes nothing for tiny-moat-0 (all widths are multiples of 32).
    ``enumerated_shapes`` (``shape`` among them, the default) makes one program for several
    sizes, saved as ``enumerated_filename(config, [shape, *others])``; it needs global
    attention with ``pe_type`` ``LePE_FUSED`` or ``NONE``, and every shape is checked as
    ``build_model`` would check it (e.g. sizes that are multiples of 32) before converting.
    A ``minimum_deployment_target`` other than ``iOS16`` is added to the file name
    (``moat_filename``). Other keyword arguments go to ``export_model``.

    Shapes: ``shape = (B, 3, H, W)`` with H and W multiples of 32.
    """
    from ..moat import build_model, moat_config

    shape = _check_shape(shape)
    if attention_mode not in ATTENTION_MODES:
        raise ValueError(f"attention_mode must be one of {list(ATTENTION_MODES)}, got {attention_mode!r}")
    build_kwargs: dict[str, Any] = dict(
        shape=shape,
        base_arch=base_arch,
        attention_mode=attention_mode,
        split_head=split_head,
        channel_buffer_align=channel_buffer_align,
        pe_type=pe_type,
        num_classes=num_classes,
    )
    if local_window_size is not None:
        build_kwargs["local_window_size"] = tuple(local_window_size)
    for other in enumerated_shapes or ():  # each size must suit the model, not only the traced one
        try:
            moat_config(**dict(build_kwargs, shape=_check_shape(other)))
        except ValueError as err:
            raise ValueError(f"enumerated shape {tuple(other)} does not suit {base_arch}: {err}") from None
    config, model = build_model(**build_kwargs)
    example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    if image_input:
        example = example * 255.0  # pixels
    n_out = 1 if num_classes else 4
    names = ["logits"] if num_classes else [f"stage_{i}" for i in range(n_out)]
    pe_name = pe_type.name if isinstance(pe_type, PEType) else str(pe_type)
    meta = {
        "short_description": (
            f"{base_arch} ({attention_mode} attention, {pe_name}, split_head={split_head}) laid out for "
            f"the Apple Neural Engine, input {tuple(shape)}; exported by ane_vit."
        ),
        "ane_vit.base_arch": base_arch,
    }
    meta.update(export_kwargs.pop("metadata", None) or {})
    filename = moat_filename(config, shape, enumerated_shapes, export_kwargs.get("minimum_deployment_target"))
    if enumerated_shapes is not None:
        export_kwargs["enumerated_shapes"] = enumerated_shapes
    return export_model(
        model,
        example,
        Path(output_dir) / filename,
        config=config,
        output_names=names,
        image_input=image_input,
        overwrite=overwrite,
        metadata=meta,
        **export_kwargs,
    )


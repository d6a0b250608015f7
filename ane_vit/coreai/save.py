"""Save a model as a Core AI program: ``export_model`` (any module), ``export_moat`` (a MOAT by name),
``save_aiprogram`` (a converted program), and the provenance each ``.aimodel`` records.

Saving is atomic, with the helper every command of ``ane_vit.export`` uses: the program is
written into a hidden folder beside the target and renamed into place when complete, so an
interrupted or failed save leaves no half-written ``.aimodel`` and an overwritten one stays
whole until the new one is ready. (``AIProgram.save_asset`` alone first deletes whatever is
at its path.) An existing target is refused unless ``overwrite=True``.

Provenance goes into the ``.aimodel``'s own ``metadata.json`` (Core AI's
``AIModelAssetMetadata``: author, description and "creator-defined" JSON values): the
versions of ane_vit, torch and the three Core AI packages, the model class and config,
the precision, the input name and shape and the output shapes. ``read_aimodel_metadata``
reads it back as JSON on any OS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._versions import dist_version
from ..attention import PEType
from ..export.metadata import config_to_dict
from ..export.save import _save_atomically
from .convert import PRECISIONS, output_names_for, to_aiprogram
from .paths import check_aimodel, default_aimodel_filename, resolve_aimodel_target
from .stack import COREAI_PINS, require_coreai

__all__ = ["export_model", "export_moat", "save_aiprogram", "read_aimodel_metadata"]

_STANDARD_FIELDS = ("author", "license", "model_description")


class _AssetWriter:
    """Gives an ``AIProgram`` the ``save(path)`` of a coremltools model, for ``_save_atomically``."""

    def __init__(self, program: Any, metadata: Any):
        self.program, self.metadata = program, metadata

    def save(self, path: str) -> None:
        self.program.save_asset(Path(path), metadata=self.metadata)


def _has_none(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_none(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_none(v) for v in value)
    return False


def _asset_metadata(fields: Mapping[str, Any]) -> Any:
    from coreai.runtime import AIModelAssetMetadata

    meta = AIModelAssetMetadata()
    for key, value in fields.items():
        if key in _STANDARD_FIELDS:
            setattr(meta, key, str(value))
            continue
        value = json.loads(json.dumps(config_to_dict(value)))
        # Core AI's custom values cannot hold null: such a value (a config with unset fields) is
        # stored as its JSON text, as ane_vit.export stores configs in an .mlpackage.
        meta.set_custom(str(key), json.dumps(value, sort_keys=True) if _has_none(value) else value)
    return meta


def save_aiprogram(program: Any, path: str | os.PathLike, *, overwrite: bool = False,
                   metadata: Mapping[str, Any] | None = None) -> Path:
    """Save a converted ``AIProgram`` atomically as an ``.aimodel``; returns the absolute path written.

    ``metadata``: ``author``, ``license``, ``model_description`` set the standard fields; any
    other key becomes a creator-defined entry (JSON-safe values; configs and enums are converted).

    Raises:
        ValueError: for a path that is not an ``.aimodel`` (checked first, as are the next two).
        FileExistsError: if the target exists and ``overwrite`` is false.
        OSError: if the output folder cannot be written.
        CoreAIUnavailableError: where Core AI is not installed.
    """
    target = resolve_aimodel_target(path, overwrite)
    require_coreai("save_aiprogram")
    fields = {"author": "ane_vit", **(metadata or {})}
    _save_atomically(_AssetWriter(program, _asset_metadata(fields)), target)
    return target


def _provenance(model: nn.Module, config: Any, precision: str, input_name: str, shape: Sequence[int],
                output_shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    from .. import __version__

    fields: dict[str, Any] = {
        "model_description": (f"{type(model).__name__} exported by ane_vit {__version__}: {precision} Core AI program, "
                              f"fixed input {input_name} {tuple(shape)}."),
        "ane_vit.version": __version__,
        "ane_vit.torch_version": torch.__version__,
        **{f"ane_vit.{name.replace('-', '_')}_version": dist_version(name) for name in COREAI_PINS},
        "ane_vit.route": "torch.export.export + run_decompositions(coreai_torch.get_decomp_table())"
                         + (" + coreai_opt.casting.cast_to_16_bit_precision" if precision == "float16" else "")
                         + " + coreai_torch.TorchConverter",
        "ane_vit.model_class": type(model).__name__,
        "ane_vit.precision": precision,
        "ane_vit.input_name": input_name,
        "ane_vit.input_shape": list(shape),
        "ane_vit.output_shapes": {k: list(v) for k, v in output_shapes.items()},
    }
    if config is not None:
        fields["ane_vit.config"] = config_to_dict(config)
        fields["ane_vit.config_class"] = type(config).__name__
    return fields


def export_model(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    *,
    precision: str = "float32",
    input_name: str = "x",
    output_names: Sequence[str] | None = None,
    config: Any = None,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Convert ``model`` to a Core AI program (``to_aiprogram``) and save it as an ``.aimodel``.

    Args:
        model: any module ``torch.export`` can export; put in eval mode.
        example_input: a float32 tensor; the program fixes its shape.
        path: the ``.aimodel`` to write (checked before converting: suffix, existing file,
            writable folder).
        precision: ``"float32"`` or ``"float16"``.
        input_name, output_names: the program's names (default ``x``; ``output`` or
            ``output_0, output_1, ...``).
        config: the architecture config (a dataclass), recorded in the metadata.
        overwrite: replace an existing ``.aimodel`` (atomically).
        metadata: extra entries (see ``save_aiprogram``).

    Shapes: ``example_input: (B, C, H, W)``.

    Returns:
        the absolute path of the saved ``.aimodel``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    target = resolve_aimodel_target(path, overwrite)  # before the slow conversion
    require_coreai("export_model")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    with torch.no_grad():
        outputs = model.eval()(example_input)
    names = output_names_for(outputs, output_names)
    outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    program = to_aiprogram(model, example_input, precision=precision, input_name=input_name, output_names=names)
    fields = _provenance(model, config, precision, input_name, tuple(example_input.shape),
                         {n: tuple(t.shape) for n, t in zip(names, outs)})
    fields.update(metadata or {})
    return save_aiprogram(program, target, overwrite=overwrite, metadata=fields)


def export_moat(
    base_arch: str = "tiny-moat-0",
    shape: Sequence[int] = (1, 3, 256, 256),
    attention_mode: str = "global",
    pe_type: PEType | str = PEType.SINGLE_HEAD_RPE,
    split_head: bool = True,
    path: str | os.PathLike | None = None,
    *,
    precision: str = "float32",
    local_window_size: Sequence[int] | None = None,
    num_classes: int | None = None,
    overwrite: bool = False,
    seed: int | None = None,
) -> Path:
    """Build a MOAT (``ane_vit.moat.build_model``) and save it as a Core AI program.

    ``path`` defaults to ``exported_model/`` + ``default_aimodel_filename(config, shape,
    precision)``; a folder gets that file name. Outputs are named ``stage_0..stage_3`` or
    ``logits`` with ``num_classes``. ``seed``: give the weights random, trained-looking
    values (``ane_vit.testing.randomize_``) instead of the initial ones, whose zeros and
    ones hide mistakes in a comparison.

    Shapes: ``shape = (B, 3, H, W)`` with H and W multiples of 32.
    """
    from ..moat import build_model

    shape = tuple(shape)
    kwargs: dict[str, Any] = dict(shape=shape, base_arch=base_arch, attention_mode=attention_mode,
                                  split_head=split_head, pe_type=pe_type, num_classes=num_classes)
    if local_window_size is not None:
        kwargs["local_window_size"] = tuple(local_window_size)
    config, model = build_model(**kwargs)  # raises ValueError for a bad name, size or window
    name = default_aimodel_filename(config, shape, precision)
    if path is None:
        path = Path("exported_model") / name
    elif Path(os.fspath(path)).suffix == "":
        path = Path(path) / name  # a folder
    if seed is not None:
        from ..testing import randomize_

        randomize_(model, seed)
    example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    names = ["logits"] if num_classes else [f"stage_{i}" for i in range(4)]
    meta = {"ane_vit.base_arch": base_arch, "ane_vit.weights": "initial" if seed is None else f"randomize_(seed={seed})"}
    return export_model(model, example, path, precision=precision, output_names=names, config=config,
                        overwrite=overwrite, metadata=meta)


def read_aimodel_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata.json`` of an ``.aimodel`` as a dict (any OS; Core AI not needed).

    Keys as Core AI writes them: ``author``, ``description``, ``producer``, ``creationDate``,
    ``assetVersion``, ``creatorDefinedMetadata`` (our provenance, ``ane_vit.*`` keys; a value
    that holds a null, such as a config, is stored as JSON text: ``json.loads`` it).
    """
    p = check_aimodel(path)
    meta = p / "metadata.json"
    if not meta.is_file():
        raise ValueError(f"{os.fspath(path)!r} has no metadata.json")
    return json.loads(meta.read_text(encoding="utf-8"))

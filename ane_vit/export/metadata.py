"""Metadata of a saved ``.mlpackage``: what ``export_model`` writes into it and reads back.

``config_to_dict`` (a config as JSON-safe data), the private ``_set_metadata`` used by
``ane_vit.export.export_model``, ``read_metadata`` and ``package_nbytes`` (size on disk);
``ane_vit.export`` re-exports the public ones. ``coremltools`` is imported inside
``read_metadata``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._versions import dist_version as _dist_version

# Keys of the standard model fields that ``metadata=`` may set; everything else is user-defined.
_STANDARD_FIELDS = ("author", "short_description", "version", "license")


def config_to_dict(config: Any) -> Any:
    """A JSON-safe copy of a config: dataclasses as dicts, enums by name, tuples as lists.

    Same content as ``dataclasses.asdict`` for plain configs; modules (e.g. an activation)
    are recorded by class name, other objects by ``repr``.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, enum.Enum):
        return config.name
    if isinstance(config, Mapping):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if config is None or isinstance(config, (bool, int, float, str)):
        return config
    if isinstance(config, nn.Module):
        return type(config).__name__
    return repr(config)


def _ane_vit_version() -> str:
    from .. import __version__

    return __version__


def _set_metadata(mlmodel, *, model, config, input_name, shape, output_shapes, image_input, image_mean, image_std,
                  compute_precision, minimum_deployment_target, metadata) -> None:
    version = _ane_vit_version()
    mlmodel.author = "ane_vit"
    mlmodel.version = version
    mlmodel.short_description = (
        f"{type(model).__name__} exported by ane_vit {version}: {compute_precision} ML Program, "
        f"fixed input {input_name} {tuple(shape)}."
    )
    user = {
        "ane_vit.version": version,
        "ane_vit.torch_version": torch.__version__,
        "ane_vit.coremltools_version": _dist_version("coremltools"),
        "ane_vit.model_class": type(model).__name__,
        "ane_vit.compute_precision": compute_precision,
        "ane_vit.minimum_deployment_target": minimum_deployment_target,
        "ane_vit.input_shape": json.dumps(list(shape)),
    }
    if config is not None:
        user["ane_vit.config"] = json.dumps(config_to_dict(config), sort_keys=True)
        user["ane_vit.config_class"] = type(config).__name__
    if image_input:
        user["ane_vit.input_normalization"] = json.dumps({"scale": "1/255", "mean": list(image_mean), "std": list(image_std)})
        mlmodel.input_description[input_name] = (
            f"RGB image {shape[-2]}x{shape[-1]}; the model computes (pixel/255 - mean)/std, "
            f"mean={tuple(image_mean)}, std={tuple(image_std)}"
        )
    else:
        mlmodel.input_description[input_name] = f"float tensor {tuple(shape)} (NCHW)"
    for name, out_shape in output_shapes.items():
        mlmodel.output_description[name] = f"tensor {tuple(out_shape)}"
    for key, value in (metadata or {}).items():
        if key in _STANDARD_FIELDS:
            setattr(mlmodel, key, str(value))
        else:
            user[str(key)] = value if isinstance(value, str) else json.dumps(config_to_dict(value))
    for key, value in user.items():
        mlmodel.user_defined_metadata[key] = value


def read_metadata(path: str | os.PathLike) -> dict:
    """Read the metadata and input/output names of a saved ``.mlpackage`` (any OS).

    Returns ``{"author", "short_description", "version", "user_defined": {...},
    "config": dict | None, "inputs": [names], "outputs": [names]}``.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    import coremltools as ct

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model package: {path}")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    meta = spec.description.metadata
    user = dict(meta.userDefined)
    return {
        "author": meta.author,
        "short_description": meta.shortDescription,
        "version": meta.versionString,
        "user_defined": user,
        "config": json.loads(user["ane_vit.config"]) if "ane_vit.config" in user else None,
        "inputs": [f.name for f in spec.description.input],
        "outputs": [f.name for f in spec.description.output],
    }


def package_nbytes(path: str | os.PathLike) -> int:
    """Bytes on disk of a ``.mlpackage`` (a folder: summed recursively) or of a file."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

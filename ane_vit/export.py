"""Export PyTorch models to Core ML ML Programs (``.mlpackage``), and the export command line.

* ``to_mlprogram`` traces a module and converts it in memory (float16, fixed shapes).
* ``export_model`` does the same for one model and saves a ``.mlpackage`` with named
  inputs and outputs and metadata (the architecture config as JSON, the versions of
  ane_vit, torch and coremltools), refusing to overwrite an existing file silently.
* ``export_moat`` builds a MOAT model with ``ane_vit.moat.build_model`` and exports it under
  the seed's file-name scheme (``default_filename``).
* ``python -m ane_vit.export`` (``main``) exports what the seed's ``export.py`` exported.

Conversion runs on any OS (coremltools converts on Linux); running the program needs
macOS (see ``ane_vit.device``). ``coremltools`` is imported inside the functions so that
``import ane_vit`` stays fast. See ``notebooks/06_export_and_inspection.ipynb``.

Why ``iOS16`` (= ``macOS13``) is the default deployment target: an ML Program needs at
least iOS 15 / macOS 12, and iOS 16 added float16 model inputs and outputs. With this
target and float16 precision coremltools declares the inputs and outputs float16 (with
``iOS15`` they stay float32 and the program casts at both ends), so the data enters and
leaves in the ANE's own precision. Every device that runs iOS 16 / macOS 13 or later loads
it, which includes every device that runs a current OS release; a later target (``iOS17``
and up) would shut out devices that stopped at iOS 16 / macOS 13 without changing the ops
our models use. Image inputs (``image_input=True``) remain 8-bit RGB images.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .attention import PEType

__all__ = [
    "DEFAULT_DEPLOYMENT_TARGET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_mlprogram",
    "export_model",
    "export_moat",
    "default_filename",
    "config_to_dict",
    "read_metadata",
    "package_nbytes",
    "main",
]

DEFAULT_DEPLOYMENT_TARGET = "iOS16"
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Keys of the standard model fields that ``metadata=`` may set; everything else is user-defined.
_STANDARD_FIELDS = ("author", "short_description", "version", "license")
_DEFAULT_SHAPES = ((512, 512), (256, 256))  # the seed's export.py, in its order
_ATTENTION_MODES = ("global", "local")


# --------------------------------------------------------------------------- conversion


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

    inv_std = None
    if image_input:
        shape = tuple(example_inputs[0].shape)
        if len(example_inputs) != 1 or len(shape) != 4 or shape[1] != 3:
            raise ValueError(
                f"image_input needs exactly one input of shape (B, 3, H, W), got shapes {[tuple(t.shape) for t in example_inputs]}"
            )
        _check_image_normalization(image_mean, image_std)
        inv_std = [1.0 / float(s) for s in image_std]
        inputs = [
            ct.ImageType(
                name=input_names[0],
                shape=shape,
                scale=1.0 / 255.0,  # one scale for all channels: pixels to [0, 1]
                bias=[-float(m) for m in image_mean],  # per channel: minus the mean
                color_layout=ct.colorlayout.RGB,
            )
        ]
    else:
        # Integer inputs (e.g. indices) stay integers; anything else is a float input.
        inputs = [
            ct.TensorType(name=n, shape=tuple(t.shape), dtype=np.int32 if not t.is_floating_point() else None)
            for n, t in zip(input_names, example_inputs)
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
    return ct.convert(
        traced,
        convert_to="mlprogram",
        inputs=inputs,
        outputs=outputs,
        compute_precision=precisions[compute_precision],
        minimum_deployment_target=target,
    )


# --------------------------------------------------------------------------- metadata


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


def _dist_version(dist: str) -> str:
    try:
        return _importlib_metadata.version(dist)
    except _importlib_metadata.PackageNotFoundError:
        return "not installed"


def _ane_vit_version() -> str:
    from . import __version__

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


# --------------------------------------------------------------------------- paths


def _pe_label(pe_type: PEType | str) -> str:
    """The seed's rendering: ``f"{pe_type}"`` of its ``PEType`` enum, e.g. ``PEType.SINGLE_HEAD_RPE``."""
    if isinstance(pe_type, PEType):
        return f"PEType.{pe_type.name}"
    name = str(pe_type).split(".")[-1]
    if name in PEType.__members__:
        return f"PEType.{name}"
    return str(pe_type)  # e.g. the seed's "ape" for non-MOAT models


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    shape = tuple(shape)
    if len(shape) != 4 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"shape must be 4 positive ints (B, C, H, W), got {shape!r}")
    return shape  # type: ignore[return-value]


def default_filename(config: Any, shape: Sequence[int]) -> str:
    """The seed's file name for a MOAT export.

    ``{base_arch}_{mode}Attn_batch{B}_{H}x{W}_{pe_type}_split-head_{split_head}.mlpackage``
    with ``pe_type`` as the seed printed its enum, e.g.
    ``tiny-moat-0_globalAttn_batch1_256x256_PEType.SINGLE_HEAD_RPE_split-head_True.mlpackage``.

    Args:
        config: any object with ``base_arch``, ``attention_mode``, ``pe_type`` and
            ``split_head`` attributes (a MOAT config) or a mapping with those keys.
        shape: the input shape ``(B, C, H, W)``.
    """
    b, _, h, w = _check_shape(shape)
    get = config.get if isinstance(config, Mapping) else (lambda k: getattr(config, k, None))
    fields = {k: get(k) for k in ("base_arch", "attention_mode", "pe_type", "split_head")}
    missing = [k for k, v in fields.items() if v is None]
    if missing:
        raise ValueError(f"config needs base_arch, attention_mode, pe_type and split_head; missing {missing} in {type(config).__name__}")
    return (
        f"{fields['base_arch']}_{fields['attention_mode']}Attn_batch{b}_{h}x{w}_"
        f"{_pe_label(fields['pe_type'])}_split-head_{bool(fields['split_head'])}.mlpackage"
    )


def _resolve_path(path, model: nn.Module, config: Any, shape: Sequence[int]) -> Path:
    def default_name() -> str:
        try:
            return default_filename(config, shape)
        except ValueError:
            return f"{type(model).__name__}_batch{shape[0]}_{'x'.join(str(s) for s in shape[2:])}.mlpackage"

    if path is None:
        return Path("exported_model") / default_name()
    path = Path(path)
    if path.suffix == ".mlpackage":
        return path
    if path.suffix == ".mlmodel":
        raise ValueError(f"ML Programs are saved as .mlpackage folders, got {str(path)!r}")
    return path / default_name()  # anything else is a folder


def _check_target(path: Path, overwrite: bool) -> None:
    """Fail fast, before the slow conversion: existing file, or a folder we cannot write."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True / --overwrite to replace it")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(err.errno, f"cannot write to the output folder ({err.strerror}); choose another folder", str(folder)) from err


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
        metadata: extra entries; ``author``, ``short_description``, ``version``, ``license``
            set the standard fields, other keys are added to the user-defined metadata.

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
    if target.exists() and not overwrite:  # appeared during the conversion
        raise FileExistsError(f"{target} already exists; pass overwrite=True / --overwrite to replace it")
    if target.is_file():  # overwrite=True; coremltools replaces a package folder itself
        target.unlink()
    mlmodel.save(str(target))
    return target


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
    **export_kwargs: Any,
) -> Path:
    """Build a MOAT model (``ane_vit.moat.build_model``) and export it as the seed named it.

    The file is ``output_dir / default_filename(config, shape)``. Outputs are named
    ``stage_0..stage_3`` (the four NCHW stage maps) or ``logits`` with ``num_classes``.
    ``local_window_size=None`` uses ``build_model``'s default, which for 256 and 512 inputs
    is the 8x8 window the seed's ``export.py`` passed explicitly. ``channel_buffer_align``
    (widths rounded up to multiples of 32) is on by default; the seed's ``export.py``
    turned it off, which changes nothing for tiny-moat-0 (all widths are multiples of 32).
    Other keyword arguments go to ``export_model``.

    Shapes: ``shape = (B, 3, H, W)`` with H and W multiples of 32.
    """
    from .moat import build_model

    shape = _check_shape(shape)
    if attention_mode not in _ATTENTION_MODES:
        raise ValueError(f"attention_mode must be one of {list(_ATTENTION_MODES)}, got {attention_mode!r}")
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
    return export_model(
        model,
        example,
        Path(output_dir) / default_filename(config, shape),
        config=config,
        output_names=names,
        image_input=image_input,
        overwrite=overwrite,
        metadata=meta,
        **export_kwargs,
    )


# --------------------------------------------------------------------------- command line


def _pe_type_arg(text: str) -> PEType:
    name = text.split(".")[-1]
    for member in PEType:
        if member.name.lower() == name.lower():
            return member
    raise argparse.ArgumentTypeError(f"unknown PE type {text!r}; choose from {', '.join(m.name for m in PEType)}")


def _build_parser(archs: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.export",
        description=(
            "Export MOAT models to Core ML ML Programs (.mlpackage, float16, fixed input shape). "
            "With no arguments: what the seed's export.py exported - tiny-moat-0, SINGLE_HEAD_RPE, "
            "global and local attention, 512x512 and 256x256 inputs, batch 1 - into exported_model/."
        ),
    )
    parser.add_argument("--arch", default="tiny-moat-0", choices=list(archs), help="base architecture (default: tiny-moat-0)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--size", nargs=2, type=int, action="append", metavar=("H", "W"),
                       help="input height and width; repeat for several (default: 512 512 and 256 256)")
    shape.add_argument("--shape", nargs=4, type=int, action="append", metavar=("B", "C", "H", "W"),
                       help="full input shape instead of --size/--batch; repeatable")
    parser.add_argument("--batch", type=int, default=None, metavar="B", help="batch size with --size (default: 1)")
    parser.add_argument("--attention-mode", action="append", choices=[*_ATTENTION_MODES, "both"],
                        help="global, local or both; repeatable (default: both)")
    parser.add_argument("--pe-type", type=_pe_type_arg, default=PEType.SINGLE_HEAD_RPE, metavar="PE",
                        help=f"position embedding: {', '.join(m.name for m in PEType)} (default: SINGLE_HEAD_RPE)")
    parser.add_argument("--local-window", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="local attention window (default: build_model's choice, 8 8 for 256 and 512 inputs)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N", help="add a classification head; output 'logits'")
    parser.add_argument("--output-dir", default="exported_model", metavar="DIR", help="folder for the .mlpackage files (default: exported_model)")
    parser.add_argument("--no-split-head", action="store_true", help="one fused softmax over all heads instead of one per head")
    parser.add_argument("--image-input", action="store_true", help="RGB image input, ImageNet normalisation inside the model")
    parser.add_argument("--overwrite", action="store_true", help="replace existing .mlpackage files")
    parser.add_argument("--dry-run", action="store_true", help="list the files that would be written, convert nothing")
    return parser


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[dict]:
    if args.shape is not None:
        if args.batch is not None:
            parser.error("--batch goes with --size; --shape already contains the batch")
        shapes = [tuple(s) for s in args.shape]
    else:
        batch = 1 if args.batch is None else args.batch
        shapes = [(batch, 3, h, w) for h, w in (args.size or _DEFAULT_SHAPES)]
    for s in shapes:
        if min(s) <= 0:
            parser.error(f"shape sizes must be positive, got {s}")
    modes: list[str] = []
    for mode in args.attention_mode or ["both"]:
        for m in _ATTENTION_MODES if mode == "both" else (mode,):
            if m not in modes:
                modes.append(m)
    split_head = not args.no_split_head
    jobs = []
    for mode in modes:  # the seed's loop order: attention mode, then shape
        for s in shapes:
            cfg = {"base_arch": args.arch, "attention_mode": mode, "pe_type": args.pe_type, "split_head": split_head}
            jobs.append(
                dict(
                    base_arch=args.arch,
                    shape=s,
                    attention_mode=mode,
                    pe_type=args.pe_type,
                    split_head=split_head,
                    local_window_size=args.local_window if mode == "local" else None,
                    num_classes=args.num_classes,
                    image_input=args.image_input,
                    path=Path(args.output_dir) / default_filename(cfg, s),
                )
            )
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m ane_vit.export [options]``; returns the exit status.

    Usage errors (unknown option, unwritable folder, existing file without
    ``--overwrite``) exit with status 2 before anything is converted.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    from .moat import ARCHITECTURES

    parser = _build_parser(sorted(ARCHITECTURES))
    args = parser.parse_args(argv)
    jobs = _plan(args, parser)
    if args.dry_run:
        for job in jobs:
            print(job["path"])
        return 0
    try:
        _check_target(Path(args.output_dir) / "probe.mlpackage", overwrite=True)
    except OSError as err:
        parser.error(str(err))
    existing = [str(j["path"]) for j in jobs if j["path"].exists()]
    if existing and not args.overwrite:
        parser.error(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    for i, job in enumerate(jobs, 1):
        job.pop("path")
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            saved = export_moat(**job, output_dir=args.output_dir, overwrite=args.overwrite)
        except ValueError as err:  # e.g. a size or window build_model does not accept
            parser.error(str(err))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start  # CPU: robust on a busy machine
        print(f"[{i}/{len(jobs)}] {saved}  {wall:.1f} s ({cpu:.1f} s CPU)  {package_nbytes(saved) / 1e6:.2f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

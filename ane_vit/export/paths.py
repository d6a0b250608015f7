"""Where an export is written: the seed's MOAT file names and the checks on the target path.

``default_filename`` (re-exported by ``ane_vit.export``) and the private helpers that
``export_model``, ``export_moat`` and the command line share: the attention modes,
the shape check, the default path and the fail-fast check of the output folder.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .._checks import positive_ints
from ..attention import PEType


def _pe_label(pe_type: PEType | str) -> str:
    """The seed's rendering: ``f"{pe_type}"`` of its ``PEType`` enum, e.g. ``PEType.SINGLE_HEAD_RPE``."""
    if isinstance(pe_type, PEType):
        return f"PEType.{pe_type.name}"
    name = str(pe_type).split(".")[-1]
    if name in PEType.__members__:
        return f"PEType.{name}"
    return str(pe_type)  # e.g. the seed's "ape" for non-MOAT models


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    return positive_ints(shape, "shape", 4, "(B, C, H, W)")  # type: ignore[return-value]


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
    """Fail fast, before the slow conversion: existing file, or a folder we cannot write.

    Creates nothing: a missing folder is checked through its nearest existing parent, and
    is made only when the package is saved (``ane_vit.export.save``), so a failed or
    interrupted export leaves no empty folder behind.
    """
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True / --overwrite to replace it")
    folder = path.parent
    try:
        if folder.is_dir():
            with tempfile.TemporaryFile(dir=folder):
                pass
            return
        parent = folder
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, f"{parent} is not writable")
    except OSError as err:
        raise OSError(err.errno, f"cannot write to the output folder ({err.strerror}); choose another folder", str(folder)) from err


def enumerated_filename(config: Any, shapes: Sequence[Sequence[int]]) -> str:
    """``default_filename`` of the first (default) shape with ``_sizes-{H}x{W}-{H}x{W}...`` added.

    E.g. ``tiny-moat-0_globalAttn_batch1_256x256_PEType.LePE_FUSED_split-head_True_sizes-256x256-224x224.mlpackage``.
    """
    shapes = [_check_shape(s) for s in shapes]
    sizes = "-".join(f"{h}x{w}" for _, _, h, w in shapes)
    return default_filename(config, shapes[0])[: -len(".mlpackage")] + f"_sizes-{sizes}.mlpackage"

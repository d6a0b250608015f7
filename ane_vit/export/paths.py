"""Where an export is written: the seed's MOAT file names and the checks on the target path.

``default_filename``, ``enumerated_filename`` and ``moat_filename`` (re-exported by
``ane_vit.export``) and the private helpers that ``export_model``, ``export_moat`` and the
command line share: the shape check, the default path and the fail-fast check of the
target (existing file, a folder we cannot write, a file name too long for the file system).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .._checks import positive_ints
from ..attention import PEType

#: Deployment targets an ML Program can have (``coremltools.target`` names of specification
#: version 6 and later), for ``python -m ane_vit.export --deployment-target``.
DEPLOYMENT_TARGETS = (
    "iOS15", "iOS16", "iOS17", "iOS18", "iOS26",
    "macOS12", "macOS13", "macOS14", "macOS15", "macOS26",
    "tvOS15", "tvOS16", "tvOS17", "tvOS18", "tvOS26",
    "watchOS8", "watchOS9", "watchOS10", "watchOS11", "watchOS26",
)
#: An enumerated program's file name lists its sizes while it stays within this many
#: characters; beyond, the sizes are summarised (count, ranges, a hash of the list).
MAX_LISTED_NAME = 128
#: What the atomic save adds to a file name for its staging folder: ".{name}.XXXXXXXX.tmp"
#: (``ane_vit.export.save._save_atomically``); the file system must allow that too.
_STAGING_EXTRA = len(".") + len(".") + 8 + len(".tmp")


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
    _check_name_length(path)
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


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or its nearest existing parent) allows."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not a folder, or no pathconf (Windows)
        return 255


def _check_name_length(path: Path) -> None:
    """Refuse a file name the save cannot create (it would fail with "File name too long"
    after the whole conversion): the name plus the staging folder's extra characters must fit."""
    size, limit = len(os.fsencode(path.name)), _name_max(path.parent)
    if size + _STAGING_EXTRA > limit:
        raise ValueError(
            f"the file name {path.name[:60]!r}... is {size} bytes; the file system of {path.parent} allows {limit}, "
            f"and the atomic save needs {_STAGING_EXTRA} more for its temporary folder: choose a name of at most "
            f"{limit - _STAGING_EXTRA} bytes"
        )


def enumerated_filename(config: Any, shapes: Sequence[Sequence[int]]) -> str:
    """``default_filename`` of the first (default) shape, followed by the other shapes.

    The first shape is the program's default (its batch and size are in the name). When all
    shapes share the batch and channels, the sizes follow as ``_sizes-{H}x{W}-{H}x{W}...``;
    when the batch differs, the full shapes as ``_shapes-{B}x{C}x{H}x{W}-...`` (so a program
    for batch 1 and 2 does not read "batch 1" alone). A name longer than ``MAX_LISTED_NAME``
    characters (a file system allows 255 bytes; the list of 30 sizes is longer) summarises
    the list instead: count, height and width ranges and the first 8 hex digits of a SHA-1 of
    the list, e.g. ``..._30sizes-h64-320-w64-192-1a2b3c4d.mlpackage``
    (``..._30shapes-b1-2-h64-320-w64-192-...`` when the batch differs).

    E.g. ``tiny-moat-0_globalAttn_batch1_256x256_PEType.LePE_FUSED_split-head_True_sizes-256x256-224x224.mlpackage``.
    """
    shapes = [_check_shape(s) for s in shapes]
    stem = default_filename(config, shapes[0])[: -len(".mlpackage")]
    one_batch = len({(b, c) for b, c, _, _ in shapes}) == 1
    if one_batch:
        listed = "_sizes-" + "-".join(f"{h}x{w}" for _, _, h, w in shapes)
    else:
        listed = "_shapes-" + "-".join("x".join(str(v) for v in s) for s in shapes)
    if len(stem + listed) + len(".mlpackage") <= MAX_LISTED_NAME:
        return stem + listed + ".mlpackage"
    digest = hashlib.sha1(json.dumps([list(s) for s in shapes]).encode()).hexdigest()[:8]
    hs, ws = [s[2] for s in shapes], [s[3] for s in shapes]
    ranges = f"h{min(hs)}-{max(hs)}-w{min(ws)}-{max(ws)}"
    if one_batch:
        return f"{stem}_{len(shapes)}sizes-{ranges}-{digest}.mlpackage"
    bs = [s[0] for s in shapes]
    return f"{stem}_{len(shapes)}shapes-b{min(bs)}-{max(bs)}-{ranges}-{digest}.mlpackage"


def moat_filename(config: Any, shape: Sequence[int], enumerated_shapes: Sequence[Sequence[int]] | None = None,
                  target: str | None = None) -> str:
    """The file name ``export_moat`` and the command line give a MOAT program.

    ``default_filename`` (one shape) or ``enumerated_filename`` (``shape`` first, then the
    other enumerated shapes), with ``_{target}`` added for a deployment target other than the
    default ``iOS16`` (e.g. ``..._split-head_True_iOS18.mlpackage``, the input that
    ``python -m ane_vit.compress --int4-block`` needs), so that programs for two targets do
    not share a name.
    """
    from .convert import DEFAULT_DEPLOYMENT_TARGET

    if enumerated_shapes is None:
        name = default_filename(config, shape)
    else:
        others = [tuple(s) for s in enumerated_shapes if tuple(s) != tuple(shape)]
        name = enumerated_filename(config, [shape, *others])
    if target is not None and target != DEFAULT_DEPLOYMENT_TARGET:
        name = name[: -len(".mlpackage")] + f"_{target}.mlpackage"
    return name


def deployment_target(text: str) -> str:
    """``text`` as the ``coremltools.target`` name it means (``"ios18"`` -> ``"iOS18"``).

    Raises:
        ValueError: naming the allowed targets (ML Programs need iOS 15 / macOS 12 or later).
    """
    for name in DEPLOYMENT_TARGETS:
        if isinstance(text, str) and name.lower() == text.strip().lower():
            return name
    raise ValueError(f"unknown deployment target {text!r}; an ML Program needs one of {', '.join(DEPLOYMENT_TARGETS)}")

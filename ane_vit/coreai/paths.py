"""Where a Core AI program lives: the ``.aimodel`` folder, checks on a target and on a source path.

An ``.aimodel`` is a folder (coreai-core 1.0.0b3 writes ``main.mlirb``, the program as MLIR
bytecode, ``main.hash``, its SHA-256, and ``metadata.json``). ``resolve_aimodel_target``
turns a user's output path into the one this package writes (``~`` expanded once, checked
before any slow work, as ``ane_vit.export.resolve_target`` does for ``.mlpackage``);
``check_aimodel`` says clearly what is wrong with a path given to read or run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..export.paths import _check_shape, _check_target, default_filename

__all__ = ["AIMODEL_SUFFIX", "PROGRAM_FILE", "resolve_aimodel_target", "check_aimodel", "aimodel_nbytes",
           "default_aimodel_filename"]

#: The suffix Core AI requires of a program folder (``AIProgram.save_asset`` refuses others).
AIMODEL_SUFFIX = ".aimodel"
#: The program inside an ``.aimodel`` (MLIR bytecode).
PROGRAM_FILE = "main.mlirb"


def _suffix_error(path: str | os.PathLike, verb: str) -> ValueError:
    text = os.fspath(path)
    suffix = Path(text).suffix
    if suffix == ".mlpackage":
        return ValueError(
            f"{text!r} is a Core ML ML Program (.mlpackage); Apple's Core AI runtime cannot open one. {verb} "
            f"a Core AI program, an .aimodel folder: python -m ane_vit.coreai export ... -o MODEL.aimodel "
            "(an .mlpackage is read by python -m ane_vit.analysis)"
        )
    return ValueError(f"{verb} a Core AI program, an .aimodel folder; got {text!r} (suffix {suffix or 'none'!r})")


def resolve_aimodel_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The absolute ``.aimodel`` path that will be written, checked before any slow work.

    ``~`` is expanded once, here, so the check and the write see the same path.

    Raises:
        ValueError: for a path that does not end in ``.aimodel`` (an ``.mlpackage`` gets its own message).
        FileExistsError: if the target exists and ``overwrite`` is false.
        OSError: if the output folder cannot be written.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    target = Path(os.path.expanduser(os.fspath(path))).absolute()
    if target.suffix != AIMODEL_SUFFIX:
        raise _suffix_error(path, "Expected the path of")
    _check_target(target, overwrite)
    return target


def check_aimodel(path: str | os.PathLike) -> Path:
    """The path of an existing Core AI program, or a clear error saying what the path is instead.

    Raises:
        FileNotFoundError: when nothing is at ``path``.
        ValueError: for an ``.mlpackage`` (Core ML), another suffix, a file, or a folder without
            a program (``main.mlirb``).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise FileNotFoundError(f"no Core AI program at {os.fspath(path)!r} (expected an .aimodel folder, "
                                "e.g. written by python -m ane_vit.coreai export)")
    if p.suffix != AIMODEL_SUFFIX:
        raise _suffix_error(path, "Expected")
    if not p.is_dir():
        raise ValueError(f"{os.fspath(path)!r} is a file; a Core AI program is an .aimodel folder")
    if not (p / PROGRAM_FILE).is_file():
        raise ValueError(f"{os.fspath(path)!r} holds no Core AI program ({PROGRAM_FILE} is missing); "
                         f"it has {sorted(q.name for q in p.iterdir())}")
    return p


def aimodel_nbytes(path: str | os.PathLike) -> int:
    """Bytes on disk of an ``.aimodel`` folder (every file in it, summed)."""
    p = check_aimodel(path)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def default_aimodel_filename(config: Any, shape: Sequence[int], precision: str) -> str:
    """The seed's MOAT file name (``ane_vit.export.default_filename``) with the precision and ``.aimodel``.

    E.g. ``tiny-moat-0_globalAttn_batch1_256x256_PEType.SINGLE_HEAD_RPE_split-head_True_float16.aimodel``.
    """
    _check_shape(shape)
    return default_filename(config, shape)[: -len(".mlpackage")] + f"_{precision}{AIMODEL_SUFFIX}"

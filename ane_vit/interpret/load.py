"""Reading a saved ML Program: the one loader of ``ane_vit.interpret``, ``ane_vit.analysis`` and
``ane_vit.compress``, with one error type per way a file can fail to be a program.

A saved ML Program is a ``.mlpackage`` folder: ``Manifest.json`` names the model file
(``Data/com.apple.CoreML/model.mlmodel``, a protobuf ``Model`` whose ``mlProgram`` lists the
ops) and the weight file (``Data/com.apple.CoreML/weights/weight.bin``). Every large
constant of the program is a ``blobFileValue``: a byte offset into ``weight.bin``, where a
64-byte header (the sentinel ``0xDEADBEEF``, the dtype, the size in bytes and the offset of
the data) precedes the data; the file itself starts with a 64-byte header whose second
32-bit word is the storage version, 2. ``read_program`` checks that structure before
coremltools reads the weights, so that a missing or truncated ``weight.bin`` is named as
such instead of surfacing as coremltools' ``index out of bounds``.

Errors (all ``ProgramLoadError``, a ``ValueError``; each message names the file and what to do):

=========================  ===================================================================
``ProgramNotFoundError``    the path does not exist (also a ``FileNotFoundError``)
``NotAProgramError``        a file, an empty folder, a folder without a valid ``Manifest.json``,
                            a package whose model file is missing or is not a Core ML model
``UnsupportedSpecError``    a Core ML model that is not an ML Program (a neural network, a
                            pipeline), or one that this coremltools cannot rebuild
``MissingWeightsError``     the program stores weights in a file that is not there
``TruncatedWeightsError``   the weight file ends before a weight the program reads
``CorruptWeightsError``     the weight file is not in the MIL blob format (wrong version or
                            a weight header without its sentinel)
=========================  ===================================================================
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "ProgramLoadError",
    "ProgramNotFoundError",
    "NotAProgramError",
    "UnsupportedSpecError",
    "MissingWeightsError",
    "TruncatedWeightsError",
    "CorruptWeightsError",
    "LoadedProgram",
    "load_mlmodel",
    "read_program",
    "load_program",
]

#: What to give instead, appended to the messages about a file that is not a program.
_WHAT_TO_GIVE = ("give the path of a .mlpackage folder (as written by python -m ane_vit.export, python -m "
                 "ane_vit.compress or coremltools' MLModel.save)")
_AGAIN = "export (or copy) the whole .mlpackage folder again"
_BLOB_SENTINEL = 0xDEADBEEF
_BLOB_HEADER = 64  # bytes of the file header and of each weight's header
_STORAGE_VERSION = 2


class ProgramLoadError(ValueError):
    """A path or model that cannot be read as a Core ML ML Program; ``path`` names it (or is None)."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class ProgramNotFoundError(ProgramLoadError, FileNotFoundError):
    """The path does not exist."""


class NotAProgramError(ProgramLoadError):
    """The path exists but is not a saved Core ML model (a file, an empty or foreign folder, junk)."""


class UnsupportedSpecError(ProgramLoadError):
    """A Core ML model that is not an ML Program, or one that this coremltools cannot rebuild."""


class MissingWeightsError(ProgramLoadError):
    """The program stores weights in a file that is not there."""


class TruncatedWeightsError(ProgramLoadError):
    """The weight file ends before the last byte of a weight the program reads."""


class CorruptWeightsError(ProgramLoadError):
    """The weight file is not in the MIL blob storage format."""


class LoadedProgram(NamedTuple):
    """What ``read_program`` returns: the MIL program, the protobuf spec (None for a MIL
    ``Program`` given directly) and a label for messages (the path, or "MLModel (in memory)")."""

    program: Any
    spec: Any
    source: str


# --------------------------------------------------------------------------- files


def _check_file(path: Path, shown: str) -> None:
    """A regular file: fine only if it parses as a Core ML model spec (an ``.mlmodel``)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise NotAProgramError(f"{shown} is an empty file, not a Core ML ML Program; {_WHAT_TO_GIVE}", shown)
    if head == b"PK\x03\x04":  # torch.save writes a zip archive
        raise NotAProgramError(
            f"{shown} is a zip archive (a PyTorch checkpoint saved with torch.save?), not a Core ML ML Program: convert the "
            f"model first (python -m ane_vit.export, or ane_vit.export.export_model); {_WHAT_TO_GIVE}", shown)
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(path.read_bytes())
    except Exception:  # protobuf's DecodeError: text, images, anything else
        spec = None
    if spec is None or spec.WhichOneof("Type") is None:
        raise NotAProgramError(f"{shown} is a file that is not a Core ML model; an ML Program is a .mlpackage folder: "
                               f"{_WHAT_TO_GIVE}", shown)


def _check_folder(path: Path, shown: str) -> None:
    """A ``.mlpackage`` folder: a readable ``Manifest.json`` whose root model file exists."""
    manifest = path / "Manifest.json"
    if not manifest.is_file():
        what = "an empty folder" if not any(path.iterdir()) else "a folder without Manifest.json"
        raise NotAProgramError(f"{shown} is {what}, not a Core ML ML Program (.mlpackage); {_WHAT_TO_GIVE}", shown)
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
        root = entries["itemInfoEntries"][entries["rootModelIdentifier"]]["path"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise NotAProgramError(
            f"{shown} is not a readable .mlpackage: its Manifest.json is not a Core ML package manifest "
            f"({type(err).__name__}: {err}); {_AGAIN}", shown) from err
    if not (path / "Data" / root).is_file():
        raise NotAProgramError(f"{shown} is incomplete: its model file Data/{root} is missing; {_AGAIN}", shown)


def _open(path: str):
    """The coremltools ``MLModel`` of a saved package, without the Core ML runtime; checked first."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    import coremltools as ct

    shown = repr(path)
    where = Path(path)
    if not where.exists():
        raise ProgramNotFoundError(f"no such .mlpackage: {shown} does not exist; {_WHAT_TO_GIVE}", path)
    if where.is_dir():
        _check_folder(where, shown)
    else:
        _check_file(where, shown)
    try:
        return ct.models.MLModel(path, skip_model_load=True)
    except Exception as err:  # a model file that is not a Model protobuf, among others
        raise NotAProgramError(f"{shown} is not a readable Core ML model: coremltools could not read it "
                               f"({type(err).__name__}: {err}); {_WHAT_TO_GIVE}", path) from err


# --------------------------------------------------------------------------- weights


def _blob_refs(spec) -> dict[str, list[int]]:
    """``{weight file name: [offsets]}`` of every ``blobFileValue`` in the program (nested blocks too)."""
    refs: dict[str, list[int]] = {}

    def value(v) -> None:
        if v.WhichOneof("value") == "blobFileValue":
            refs.setdefault(v.blobFileValue.fileName, []).append(int(v.blobFileValue.offset))

    def block(b) -> None:
        for op in b.operations:
            for v in op.attributes.values():
                value(v)
            for arg in op.inputs.values():
                for binding in arg.arguments:
                    if binding.WhichOneof("binding") == "value":
                        value(binding.value)
            for inner in op.blocks:
                block(inner)

    for func in spec.mlProgram.functions.values():
        for b in func.block_specializations.values():
            block(b)
    return refs


def _check_weights(spec, weights_dir: str | None, shown: str) -> None:
    """Every weight the program reads lies inside its weight file, behind a valid header."""
    for name, offsets in _blob_refs(spec).items():
        rel = name.replace("@model_path/weights/", "", 1)
        path = Path(weights_dir or "", rel)
        where = f"{shown}: its weight file {str(path)!r}"
        if not weights_dir or not path.is_file():
            raise MissingWeightsError(f"{where} is missing ({len(offsets)} weights are stored there): the package is "
                                      f"incomplete; {_AGAIN}", shown)
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(_BLOB_HEADER)
            if len(header) < _BLOB_HEADER:
                raise TruncatedWeightsError(f"{where} has {size:,} bytes, less than its own {_BLOB_HEADER}-byte header: "
                                            f"it is truncated; {_AGAIN}", shown)
            version = struct.unpack_from("<I", header, 4)[0]
            if version != _STORAGE_VERSION:
                raise CorruptWeightsError(f"{where} is not a MIL weight file (storage version {version}, expected "
                                          f"{_STORAGE_VERSION}): it is damaged or replaced; {_AGAIN}", shown)
            for offset in sorted(offsets):
                f.seek(offset)
                meta = f.read(_BLOB_HEADER)
                if len(meta) < _BLOB_HEADER:
                    raise TruncatedWeightsError(f"{where} has {size:,} bytes but the program reads a weight at byte "
                                                f"{offset:,}: the file is truncated (an interrupted copy?); {_AGAIN}", shown)
                sentinel, _dtype, nbytes, data = struct.unpack_from("<IIQQ", meta)
                if sentinel != _BLOB_SENTINEL:
                    raise CorruptWeightsError(f"{where} has no weight header at byte {offset:,}, where the program "
                                              f"reads one: the file is damaged or belongs to another program; {_AGAIN}",
                                              shown)
                if data + nbytes > size:
                    raise TruncatedWeightsError(f"{where} has {size:,} bytes but the weight at byte {offset:,} needs "
                                                f"{data + nbytes:,}: the file is truncated (an interrupted copy?); {_AGAIN}",
                                                shown)


# --------------------------------------------------------------------------- entry points


def _spec_checked(model, shown: str):
    spec = model.get_spec()
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise UnsupportedSpecError(
            f"{shown} is a Core ML {kind!r} model, not an ML Program: ane_vit reads ML Programs only (convert with "
            "convert_to='mlprogram', as python -m ane_vit.export does)", shown)
    return spec


def load_mlmodel(path: str | os.PathLike):
    """A saved ``.mlpackage`` as a coremltools ``MLModel`` (``skip_model_load=True``), checked first.

    Checks the package (``Manifest.json``, the model file), that it is an ML Program and that
    every weight it reads lies in its weight file, so that whatever reads it next (a
    coremltools compression pass, ``read_program``) gets a whole program.

    Raises:
        TypeError: ``path`` is not a ``str`` or ``os.PathLike``.
        ProgramLoadError: one subclass per failure (see the module docstring).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming a .mlpackage, got {type(path).__name__}")
    path = os.fspath(path)
    model = _open(path)
    spec = _spec_checked(model, repr(path))
    _check_weights(spec, model.weights_dir, repr(path))
    return model


def read_program(model) -> LoadedProgram:
    """``(MIL Program, spec, source label)`` of a model, a saved package or a MIL ``Program``.

    ``model`` may be a coremltools ``MLModel`` (converted in memory, or loaded from disk with
    ``skip_model_load=True``), a path to a saved ``.mlpackage``, or a MIL ``Program``. A model
    loaded from disk has no MIL program in memory; it is rebuilt from the spec and the weight
    file with coremltools' own MIL-proto loader, after the checks of ``load_mlmodel``.

    Raises:
        TypeError: for anything else.
        ProgramLoadError: one subclass per failure (see the module docstring).
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    from coremltools.converters.mil.mil import Program

    if isinstance(model, Program):
        return LoadedProgram(model, None, "MIL Program (in memory)")
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        model = load_mlmodel(source)
    else:
        import coremltools as ct

        if not isinstance(model, ct.models.MLModel):
            raise TypeError(f"model must be a coremltools MLModel, a MIL Program or a path to an .mlpackage, "
                            f"got {type(model).__name__}")
        source = "MLModel (in memory)"
        spec = _spec_checked(model, source)
        prog = getattr(model, "_mil_program", None)
        if prog is not None:
            return LoadedProgram(prog, spec, source)
        _check_weights(spec, model.weights_dir, source)
    spec = model.get_spec()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    try:
        prog = milproto_load(spec, spec.specificationVersion, model.weights_dir or "")
    except Exception as err:
        import coremltools as ct

        raise UnsupportedSpecError(
            f"coremltools {ct.__version__} cannot rebuild the ML Program at {source!r} ({type(err).__name__}: {err}): "
            f"it was written by a newer coremltools, or it is damaged; {_AGAIN}", source) from err
    return LoadedProgram(prog, spec, source)


def load_program(model):
    """The MIL program of ``model`` (an ``MLModel``, a path to an ``.mlpackage``, or a MIL ``Program``).

    See ``read_program``, which also returns the spec and a label for messages.
    """
    return read_program(model).program

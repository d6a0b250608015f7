"""Accuracy of the digits model at every stage, from PyTorch float32 to compressed programs.

Stages, all on the same test images: the reference model (PyTorch, float32), the ANE model
(PyTorch, float32 and float16), the converted float16 program (``ane_vit.export``, iOS16)
run by ``ane_vit.interpret`` (numpy), and each compressed program (``ane_vit.compress``; the
iOS18-only methods compress a second export with ``minimum_deployment_target="iOS18"``).
For each: top-1 accuracy, agreement of the predicted labels with PyTorch float32, the
file size and its ratio to the float16 program.

Linux only needs numpy, torch and coremltools here: nothing is predicted by Core ML.
PyTorch float16 and the numpy interpreter are slow on some CPUs; ``stratified_subset``
picks a fixed, class-balanced subset for quick checks (the tests use it).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import load_data
from .model import ARCH, load_model

__all__ = ["COMPRESSIONS", "stratified_subset", "check_subset_limit", "limited_split", "predict", "program_logits", "predict_program", "export_digits", "compress_program",
           "program_files", "check_work_dir", "check_limit", "label_string", "evaluate", "format_table"]

#: The compressed programs ``evaluate`` measures: name -> (method, arguments).
COMPRESSIONS: dict[str, tuple[str, dict]] = {
    "palettize 8 bit": ("palettize", {"nbits": 8}),
    "palettize 6 bit": ("palettize", {"nbits": 6}),
    "palettize 4 bit": ("palettize", {"nbits": 4}),
    "palettize 2 bit": ("palettize", {"nbits": 2}),
    "palettize 1 bit": ("palettize", {"nbits": 1}),
    "palettize 4 bit, groups of 16": ("palettize", {"nbits": 4, "group_size": 16}),
    "int8 per channel": ("int8", {}),
    "int4 blocks of 32": ("int4-block", {"block_size": 32}),
    "prune 50 %": ("prune", {"sparsity": 0.5}),
    "prune 75 %": ("prune", {"sparsity": 0.75}),
    "prune 2:4": ("prune-n:m", {"n": 2, "m": 4}),
    "W8A8, calibrated on 160 training images": ("w8a8", {}),
    # coremltools' default leaves constants of <= 2,048 elements in float16; 0 compresses all it can
    "palettize 4 bit, every constant": ("palettize", {"nbits": 4, "weight_threshold": 0}),
    "int8 per channel, every constant": ("int8", {"weight_threshold": 0}),
}
#: Training images whose activation ranges calibrate W8A8 (ane_vit.compress.quantize_activations).
CALIBRATION_IMAGES = 160
_IOS18 = {"palettize-grouped", "int4-block"}
#: Deployment targets of the two float16 exports (the iOS18 one is the source of the iOS18-only methods).
_TARGETS = ("iOS16", "iOS18")
#: Batch of the programs ``evaluate`` exports (the weights do not depend on it).
PROGRAM_BATCH = 40


def _program_file(name: str) -> str:
    """``"prune 2:4"`` -> ``"digits_prune_2-4.mlpackage"``."""
    return f"digits_{name.replace(' ', '_').replace(',', '').replace('%', 'pct').replace(':', '-')}.mlpackage"


def program_files(compressed: bool = True) -> list[str]:
    """Names of the programs ``evaluate`` saves in its work folder: the two float16 exports,
    then one per entry of ``COMPRESSIONS`` (with ``compressed``)."""
    return [f"digits_fp16_{t}.mlpackage" for t in _TARGETS] + ([_program_file(n) for n in COMPRESSIONS] if compressed else [])


def check_work_dir(work_dir: str | os.PathLike, compressed: bool = True, overwrite: bool = False) -> Path:
    """Check ``evaluate``'s work folder before any work; returns it (``~`` expanded, absolute).

    It must be a folder, or a path where one can be made and written; a program that
    ``evaluate`` would save there (``program_files``) must not exist unless ``overwrite``.

    Raises:
        NotADirectoryError: ``work_dir`` (or a parent) is a file.
        FileExistsError: listing the programs already there.
        OSError: the folder cannot be written.
    """
    from ..export.paths import _check_target

    folder = Path(os.path.expanduser(os.fspath(work_dir))).absolute()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"the work folder {folder} is a file, not a folder; choose a folder for the programs")
    names = program_files(compressed)
    existing = [n for n in names if (folder / n).exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise FileExistsError(f"{len(existing)} program(s) already in the work folder {folder}: {shown}; "
                              "pass overwrite=True / --overwrite to replace them, or choose another folder")
    _check_target(folder / names[0], overwrite=True)  # writable; a parent that is a file is named
    return folder


def check_limit(limit: int, n_test: int, name: str = "limit") -> int:
    """``limit`` if it is an int from 10 (one image per class) to ``n_test``; else a ``ValueError``
    naming ``name`` (``evaluate`` takes more images than the split has for all of them)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 10 <= limit <= n_test:
        raise ValueError(f"{name} must be an int from 10 to {n_test} (the test images, 10 classes), got {limit!r}")
    return limit


def stratified_subset(y: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` images of each class (sorted): a fixed, balanced subset."""
    idx = [torch.nonzero(y == c).flatten()[:per_class] for c in range(int(y.max()) + 1)]
    return torch.sort(torch.cat(idx)).values


def check_subset_limit(limit) -> None:
    """``limit`` for ``limited_split``: ``None`` (every test image) or an int >= 10 (10 classes)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 10):
        raise ValueError(f"limit must be an int >= 10 (images, 10 classes), got {limit!r}")


def limited_split(x: torch.Tensor, y: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels ``stratified_subset`` keeps for ``limit`` (``limit // 10`` per class);
    all of them for ``None``. Shapes: ``x: (N, 3, 64, 64), y: (N,)`` -> the kept rows of each.
    """
    check_subset_limit(limit)
    if limit is None:
        return x, y
    keep = stratified_subset(y, limit // 10)
    return x[keep], y[keep]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float32, batch_size: int = 40) -> torch.Tensor:
    """Predicted labels of a PyTorch model run in ``dtype``. Shapes: ``x: (N, 3, 64, 64) -> (N,)``.

    Another dtype runs on a copy: casting ``model`` itself to float16 and back would leave
    every weight and batch-norm statistic rounded to float16 (a later export would differ).
    """
    if dtype != torch.float32:
        import copy

        model = copy.deepcopy(model)
    model = model.eval().to(dtype)
    return torch.cat([model(x[i:i + batch_size].to(dtype)).argmax(1) for i in range(0, len(x), batch_size)])


def program_logits(program, x: torch.Tensor) -> np.ndarray:
    """Logits of a converted program run by ``ane_vit.interpret``, batch by batch (the last one
    padded with zeros to the program's batch, the padded rows dropped).

    Shapes: ``x: (N, 3, 64, 64) -> (N, 10)``
    """
    from ..interpret import load_program, run_program

    prog = load_program(program)
    (name, var), = prog.functions["main"].inputs.items()
    batch = int(var.shape[0])
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].numpy()
        n = len(xb)
        if n < batch:
            xb = np.concatenate([xb, np.zeros((batch - n, *xb.shape[1:]), xb.dtype)])
        (logits,) = run_program(prog, {name: xb}).values()
        out.append(np.asarray(logits, np.float32)[:n])
    return np.concatenate(out)


def predict_program(program, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels of a converted program run by ``ane_vit.interpret`` (``program_logits``).

    Shapes: ``x: (N, 3, 64, 64) -> (N,)``
    """
    return torch.from_numpy(program_logits(program, x).argmax(1))


def export_digits(model: nn.Module, path: str | os.PathLike, target: str = "iOS16", batch: int = PROGRAM_BATCH,
                  overwrite: bool = False) -> Path:
    """Export the digits model as a float16 program (input ``x``, output ``logits``)."""
    from ..export import export_model

    return export_model(
        model, torch.zeros(batch, 3, 64, 64), path, output_names=["logits"], minimum_deployment_target=target,
        overwrite=overwrite, metadata={"short_description": f"{ARCH} trained on the digits (ane_vit.digits)."},
    )


def compress_program(source, method: str, calibration: torch.Tensor | None = None, **kwargs):
    """Apply one ``ane_vit.compress`` method by its name in ``METHOD_TARGETS``; returns the ``MLModel``.

    ``calibration`` (images ``(N, 3, 64, 64)``, N a multiple of the program's batch) is needed by ``w8a8``.
    """
    from .. import compress

    functions = {
        "palettize": compress.palettize, "int8": compress.quantize_int8, "int4-block": compress.quantize_int4_block,
        "prune": compress.prune_magnitude, "prune-n:m": compress.prune_n_m,
    }
    if method == "w8a8":
        if calibration is None:
            raise ValueError("w8a8 needs calibration images")
        from ..interpret import load_program

        (name, var), = load_program(compress.methods._load(source)).functions["main"].inputs.items()
        batch = int(var.shape[0])
        samples = [{name: calibration[i:i + batch].numpy()} for i in range(0, len(calibration) - batch + 1, batch)]
        return compress.quantize_activations(source, samples)
    if method not in functions:
        raise ValueError(f"method must be one of {sorted(functions)}, got {method!r}")
    return functions[method](source, **kwargs)


def label_string(labels: torch.Tensor) -> str:
    """Predicted (or true) digit labels as one character each, e.g. ``"0371..."``: the per-image
    record that paired tests (``ane_vit.stats``) need, compact in JSON. Shapes: ``labels: (N,)``."""
    return "".join(str(int(v)) for v in labels.tolist())


def _row(name: str, labels: torch.Tensor, y: torch.Tensor, fp32: torch.Tensor, **extra) -> dict:
    return {
        "stage": name,
        "accuracy": float((labels == y).double().mean()),
        "agreement_with_fp32": float((labels == fp32).double().mean()),
        "errors": int((labels != y).sum()),
        **extra,
        "labels": label_string(labels),
    }


def evaluate(
    weights: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    compressed: bool = True,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Accuracy of every stage on the test split; returns a JSON-ready dict with provenance.

    Args:
        weights: another reference state dict (default: the shipped weights).
        work_dir: keep the exported and compressed programs there (default: a temporary folder);
            checked before any work (``check_work_dir``).
        limit: use ``stratified_subset`` with ``limit // 10`` images per class instead of the
            whole split: an int from 10 to the number of test images (360). The result's
            ``split`` records the images that ran (``n_test``; ``subset`` if fewer than all).
        compressed: also measure the compressed programs.
        log: called with one line per finished stage.
        overwrite: replace programs already in ``work_dir`` (each save is atomic:
            ``ane_vit.export.save_program``).

    Raises:
        ValueError: a bad ``limit`` or weights that are not the digits model's.
        FileNotFoundError: no weights file; FileExistsError, NotADirectoryError, OSError:
            a ``work_dir`` that cannot take the programs (see ``check_work_dir``).
    """
    from .. import __version__
    from .. import compress as compress_mod
    from ..export import save_program
    from ..export.metadata import _dist_version, package_nbytes

    log = log or (lambda _: None)
    folder = check_work_dir(work_dir, compressed, overwrite) if work_dir is not None else None
    x_train, _, x, y = load_data()
    n_split = len(y)
    if limit is not None:
        check_limit(limit, n_split)
        keep = stratified_subset(y, limit // 10)
        x, y = x[keep], y[keep]
    reference, ane = load_model("reference", weights), load_model("ane", weights)
    rows = []
    start = time.perf_counter()
    fp32 = predict(reference, x)
    rows.append(_row("reference, PyTorch fp32", fp32, y, fp32))
    for name, model, dtype in (("ANE, PyTorch fp32", ane, torch.float32), ("ANE, PyTorch fp16", ane, torch.float16)):
        rows.append(_row(name, predict(model, x, dtype), y, fp32))
        log(f"{name}: {rows[-1]['accuracy']:.4f}")
    tmp = tempfile.TemporaryDirectory() if folder is None else None
    folder = Path(tmp.name) if tmp else folder
    try:
        programs = {t: export_digits(ane, folder / name, t, overwrite=overwrite)
                    for t, name in zip(_TARGETS, program_files(compressed=False))}
        fp16_bytes = package_nbytes(programs["iOS16"])
        rows.append(_row("program fp16 (iOS16), interpreted", predict_program(programs["iOS16"], x), y, fp32,
                         bytes=fp16_bytes, ratio_to_fp16=1.0, method="none", minimum_target="iOS16"))
        log(f"program fp16: {rows[-1]['accuracy']:.4f}")
        for name, (method, kwargs) in (COMPRESSIONS.items() if compressed else ()):
            source = programs["iOS18" if method in _IOS18 or (method == "palettize" and "group_size" in kwargs) else "iOS16"]
            family = "palettize-grouped" if "group_size" in kwargs else method
            out = compress_program(source, method, calibration=x_train[:CALIBRATION_IMAGES], **kwargs)
            path = save_program(out, folder / _program_file(name), overwrite=overwrite)
            extra = {"bytes": package_nbytes(path), "method": family, "minimum_target": compress_mod.METHOD_TARGETS[family],
                     "settings": kwargs}
            extra["ratio_to_fp16"] = fp16_bytes / extra["bytes"]
            if method.startswith("prune"):
                extra["sparsity"] = compress_mod.weight_sparsity(out)
            rows.append(_row(f"program {name}", predict_program(out, x), y, fp32, **extra))
            log(f"program {name}: {rows[-1]['accuracy']:.4f}, {extra['bytes'] / 1e3:.0f} kB")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {
        "model": ARCH,
        "split": {"n_test": len(y), "subset": len(y) < n_split, "seed": 0, "test_fraction": 0.2, "labels": label_string(y)},
        "stages": rows,
        "provenance": {
            "what": "accuracy on the digits test split; programs run by ane_vit.interpret (numpy), not by Core ML",
            "machine": f"{platform.system()} {platform.machine()}",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - start, 1),
            "versions": {"torch": torch.__version__, "coremltools": _dist_version("coremltools"), "numpy": np.__version__,
                         "scikit-learn": _dist_version("scikit-learn"), "ane_vit": __version__},
        },
    }


def format_table(results: dict) -> str:
    """The accuracy table as text, one line per stage."""
    lines = [f"{'stage':46s} {'accuracy':>9s} {'agree fp32':>10s} {'kB':>8s} {'x fp16':>7s}"]
    for r in results["stages"]:
        size = f"{r['bytes'] / 1e3:8.1f} {r['ratio_to_fp16']:7.2f}" if "bytes" in r else f"{'':8s} {'':7s}"
        lines.append(f"{r['stage']:46s} {r['accuracy']:9.2%} {r['agreement_with_fp32']:10.2%} {size}")
    return "\n".join(lines)

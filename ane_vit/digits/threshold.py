"""What coremltools' 2,048-element threshold leaves out, and what compressing it costs (chapter 8).

``coremltools.optimize.coreml`` compresses a constant only if it has more than
``weight_threshold`` elements (default 2,048), is of rank 2 or more, and has at least 10
elements. In the digits program the constants it skips are the depthwise 3x3 kernels, the
LePE kernels and the absolute position tables (position embeddings), the squeeze-excitation
convs, the first stem conv, one shortcut conv (exactly 2,048 weights), the classifier head,
and every rank-1 constant (biases, norm
scales and shifts, batch-norm statistics). This module

* sorts the program's float constants into those roles (``constant_roles``);
* splits a program's file into its parts (``size_breakdown``): the program description
  (``model.mlmodel``), compressed weights, weights left in float16 above and below the
  threshold, rank-1 constants, and the weight file's headers and alignment;
* measures, for 4-bit and 2-bit palettization and int8 weights, what lowering the threshold
  to 0 saves and costs, and the damage of compressing *each role alone* (accuracy on the test
  images and PSNR of the logits against the float16 program): ``threshold_study``
  (``python -m ane_vit.digits threshold`` -> ``results/digits_threshold.json``).
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

__all__ = ["ROLES", "constant_roles", "size_breakdown", "threshold_study"]

#: The roles of the constants coremltools skips by default, in the order tables list them.
ROLES = ("depthwise kernels", "LePE kernels", "position tables", "squeeze-excitation", "stem conv", "shortcut conv",
         "classifier head", "other", "rank-1 (biases, norms)")
_WEIGHT_FILE_DTYPES = {np.dtype(t) for t in ("float16", "float32", "uint8", "int8")}


def _role(op) -> str:
    val = op.outputs[0].val
    if val.ndim <= 1:
        return "rank-1 (biases, norms)"
    name = op.name
    child = op.outputs[0].child_ops[0] if op.outputs[0].child_ops else None
    if child is not None and child.op_type == "add":
        return "position tables"  # LePE_ADD's absolute table (1, C, 1, S), added after the norm
    if "lepe" in name:
        return "LePE kernels"
    if "_se_" in name:
        return "squeeze-excitation"
    if "stem" in name:
        return "stem conv"
    if "head" in name:
        return "classifier head"
    if "shortcut" in name:
        return "shortcut conv"
    if child is not None and child.op_type == "conv" and val.ndim == 4 and val.shape[1] == 1:
        return "depthwise kernels"
    return "other"


def constant_roles(program, weight_threshold: int = 2048) -> list[dict]:
    """The program's float constants of at most ``weight_threshold`` elements: name, shape, bytes, role.

    ``compressible`` says whether coremltools would compress the constant at threshold 0
    (rank >= 2 and at least 10 elements).
    """
    from ..interpret import load_program

    rows = []
    for op in load_program(program).functions["main"].operations:
        if op.op_type != "const" or not op.outputs[0].child_ops:
            continue
        val = op.outputs[0].val
        if not isinstance(val, np.ndarray) or val.dtype.kind != "f" or val.size > weight_threshold:
            continue
        if any(c.op_type.startswith("constexpr_") for c in op.outputs[0].child_ops):
            continue
        rows.append({"name": op.name, "shape": list(val.shape), "elements": int(val.size), "bytes": int(val.nbytes),
                     "role": _role(op), "compressible": bool(val.ndim >= 2 and val.size >= 10)})
    return rows


def size_breakdown(path: str | os.PathLike, weight_threshold: int = 2048) -> dict:
    """Bytes of a saved ``.mlpackage`` by part (decimal bytes, the parts sum to the package size).

    ``description`` (``model.mlmodel``: ops, names, constants under 10 elements), ``manifest``,
    and in ``weight.bin``: ``compressed`` (inputs of ``constexpr_*`` ops), ``float16 large``
    (dense constants above ``weight_threshold`` elements), ``float16 small`` (rank >= 2, at most
    the threshold), ``rank-1`` and ``headers and alignment`` (the rest of the weight file).
    """
    from ..interpret import load_program

    path = Path(path)
    data = path / "Data" / "com.apple.CoreML"
    parts = {"description": (data / "model.mlmodel").stat().st_size, "manifest": (path / "Manifest.json").stat().st_size}
    weight_file = sum(f.stat().st_size for f in (data / "weights").glob("*")) if (data / "weights").exists() else 0
    stored = {"compressed": 0, "float16 large": 0, "float16 small": 0, "rank-1": 0}
    for op in load_program(str(path)).functions["main"].operations:
        if op.op_type != "const":
            continue
        val = op.outputs[0].val
        if not isinstance(val, np.ndarray) or val.size < 10 or val.dtype not in _WEIGHT_FILE_DTYPES:
            continue  # kept in the description
        if any(c.op_type.startswith("constexpr_") for c in op.outputs[0].child_ops):
            stored["compressed"] += val.nbytes
        elif val.ndim <= 1:
            stored["rank-1"] += val.nbytes
        elif val.size > weight_threshold:
            stored["float16 large"] += val.nbytes
        else:
            stored["float16 small"] += val.nbytes
    parts.update(stored)
    parts["headers and alignment"] = weight_file - sum(stored.values())
    parts["total"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return parts


def _logits(program, x: torch.Tensor) -> np.ndarray:
    """Logits of a program run by ``ane_vit.interpret``. Shapes: ``x: (N, 3, 64, 64) -> (N, 10)``."""
    from .evaluate import program_logits

    return program_logits(program, x)


_METHODS = {
    "palettize 4 bit": lambda cto, t: cto.OpPalettizerConfig(nbits=4, mode="kmeans", granularity="per_tensor", weight_threshold=t),
    "palettize 2 bit": lambda cto, t: cto.OpPalettizerConfig(nbits=2, mode="kmeans", granularity="per_tensor", weight_threshold=t),
    "int8 per channel": lambda cto, t: cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                                   granularity="per_channel", weight_threshold=t),
}


def _compress_only(source, method: str, names: list[str]):
    """Compress only the constants ``names`` (threshold 0 for them), everything else stays float16."""
    import coremltools.optimize.coreml as cto

    from .. import compress

    fn = cto.palettize_weights if method.startswith("palettize") else cto.linear_quantize_weights
    config = cto.OptimizationConfig(op_name_configs={n: _METHODS[method](cto, 0) for n in names})
    family = "palettize" if method.startswith("palettize") else "int8"
    params = {"nbits": int(method.split()[1])} if family == "palettize" else {"nbits": 8}
    if family == "palettize":
        params["group_size"] = None
    return compress.methods._run(fn, compress.methods._load(source), config, family, params,
                                 {"only": f"{len(names)} constants of <= 2,048 elements"})


def threshold_study(limit: int | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Size and accuracy of the digits program at threshold 2,048 and 0, and each small role compressed alone.

    For each method of ``_METHODS``: the program at coremltools' default threshold and at 0
    (``ane_vit.compress`` with ``weight_threshold``), with their ``size_breakdown``; then each
    role of ``constant_roles`` compressed alone (the large weights left in float16), to see
    which constants a lower threshold damages. Every program runs on the test images in
    ``ane_vit.interpret``; rows carry accuracy, per-image labels, bytes and the PSNR of the
    logits against the float16 program.
    """
    from .. import __version__, compress
    from ..export.metadata import _dist_version, package_nbytes
    from ..testing import psnr
    from .data import load_data
    from .evaluate import export_digits, label_string, limited_split
    from .model import ARCH, load_model

    log = log or (lambda _: None)
    _, _, x, y = load_data()
    x, y = limited_split(x, y, limit)
    start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    folder = Path(tmp.name)
    try:
        source = export_digits(load_model("ane"), folder / "digits_fp16.mlpackage")
        reference = _logits(source, x)
        roles = constant_roles(source)
        fp16_bytes = package_nbytes(source)

        def row(name: str, model, **extra) -> dict:
            path = folder / f"{len(rows)}.mlpackage"
            model.save(str(path))
            logits = _logits(model, x)
            labels = torch.from_numpy(logits.argmax(1))
            r = {"program": name, "bytes": package_nbytes(path), "saved_bytes": fp16_bytes - package_nbytes(path),
                 "accuracy": float((labels == y).double().mean()), "errors": int((labels != y).sum()),
                 "logits_psnr_db": float(psnr(reference, logits)), **extra,
                 "breakdown": size_breakdown(path), "labels": label_string(labels)}
            log(f"{name}: {r['bytes'] / 1e3:.1f} kB, accuracy {r['accuracy']:.4f}, PSNR {r['logits_psnr_db']:.1f} dB")
            return r

        rows: list[dict] = []
        rows.append(row("float16", compress.methods._load(source), method="none", weight_threshold=None, role=None))
        functions = {"palettize 4 bit": lambda t: compress.palettize(source, 4, weight_threshold=t),
                     "palettize 2 bit": lambda t: compress.palettize(source, 2, weight_threshold=t),
                     "int8 per channel": lambda t: compress.quantize_int8(source, weight_threshold=t)}
        for method, fn in functions.items():
            for t in (compress.WEIGHT_THRESHOLD, 0):
                rows.append(row(f"{method}, threshold {t}", fn(t), method=method, weight_threshold=t, role=None))
            for role in ROLES:
                names = [c["name"] for c in roles if c["role"] == role and c["compressible"]]
                if names:
                    rows.append(row(f"{method}, only {role}", _compress_only(source, method, names), method=method,
                                    weight_threshold=0, role=role, constants=len(names)))
    finally:
        tmp.cleanup()
    import coremltools as ct

    summary = {}
    for c in roles:
        s = summary.setdefault(c["role"], {"constants": 0, "elements": 0, "bytes": 0, "compressible": 0})
        s["constants"] += 1
        s["elements"] += c["elements"]
        s["bytes"] += c["bytes"]
        s["compressible"] += int(c["compressible"])
    return {
        "model": ARCH,
        "split": {"n_test": len(y), "subset": limit is not None, "labels": label_string(y)},
        "fp16_bytes": fp16_bytes,
        "small_constants": summary,
        "rows": rows,
        "provenance": {
            "what": "digits program compressed at coremltools' default threshold and at 0, and each role of small "
                    "constants alone; programs run by ane_vit.interpret (numpy), not by Core ML",
            "machine": f"{platform.system()} {platform.machine()}",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - start, 1),
            "command": "python -m ane_vit.digits threshold",
            "versions": {"torch": torch.__version__, "coremltools": ct.__version__, "numpy": np.__version__,
                         "scikit-learn": _dist_version("scikit-learn"), "ane_vit": __version__},
        },
    }

"""Accuracy through Core AI: the digits model's Core AI programs on the digits test split.

``digits_accuracy`` exports the trained digits micro-moat (``ane_vit.digits``, ANE layout)
as a float32 and a float16 Core AI program with a fixed batch, runs every test image through
Apple's runtime (the last batch padded with zeros, whose outputs are dropped) and reports,
per program, the top-1 accuracy and the agreement of its labels with PyTorch float32 (the
reference model, as ``ane_vit.digits.evaluate`` does), plus the program's size on disk.

Apple's Linux runtime is a CPU reference, not a fast path: the whole split (360 images)
takes tens of seconds per program on a 2-core x86 machine. The book reads the committed
result (``python -m ane_vit.coreai accuracy --overwrite`` ->
``results/coreai_digits_accuracy.json``); tests use a fixed subset (``limit``).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bench.measure import _cpu_model
from .convert import PRECISIONS
from .paths import aimodel_nbytes
from .runtime import AIModelRunner
from .save import export_model
from .stack import coreai_versions, require_coreai

__all__ = ["PROGRAM_BATCH", "aimodel_outputs", "predict_aimodel", "digits_accuracy", "format_accuracy_table"]

#: Batch of the programs ``digits_accuracy`` exports (360 test images = 9 batches).
PROGRAM_BATCH = 40


def aimodel_outputs(runner: AIModelRunner, x: torch.Tensor, output: str = "logits") -> np.ndarray:
    """``output`` of an open runner over ``x``, batch by batch, as float32.

    The last batch is padded with zeros to the program's batch; the padded rows are dropped.

    Shapes: ``x: (N, C, H, W) -> (N, ...)``; the program's input is ``(B, C, H, W)``.
    """
    (name, shape), = runner.input_shapes.items()
    batch = shape[0]
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        raise ValueError(f"images must be {tuple(shape[1:])} to fit the program's input {name!r} {shape}, "
                         f"got {tuple(x.shape[1:])}")
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].numpy()
        n = len(xb)
        if n < batch:
            xb = np.concatenate([xb, np.zeros((batch - n, *xb.shape[1:]), xb.dtype)])
        out.append(np.asarray(runner({name: xb})[output], np.float32)[:n])
    return np.concatenate(out)


def predict_aimodel(runner: AIModelRunner, x: torch.Tensor, output: str = "logits") -> torch.Tensor:
    """Predicted labels (argmax of ``output``) of an open runner over ``x`` (``aimodel_outputs``).

    Shapes: ``x: (N, C, H, W) -> (N,)``; the program's input is ``(B, C, H, W)``.
    """
    return torch.from_numpy(aimodel_outputs(runner, x, output).argmax(1))


def digits_accuracy(
    limit: int | None = None,
    precisions: Sequence[str] = PRECISIONS,
    batch: int = PROGRAM_BATCH,
    work_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Accuracy and label agreement of the digits model's Core AI programs; JSON-ready, with provenance.

    Args:
        limit: use ``ane_vit.digits.evaluate.stratified_subset`` with ``limit // 10`` images
            per class instead of all test images (an int >= 10).
        precisions: which programs, ``"float32"`` and/or ``"float16"``.
        batch: the programs' fixed batch.
        work_dir: keep the ``.aimodel`` files there (default: a temporary folder).
        log: called with one line per finished program.
    """
    from .. import __version__
    from ..digits import load_data, load_model
    from ..digits.evaluate import check_subset_limit, limited_split, predict

    check_subset_limit(limit)  # before any slow work
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precisions must be drawn from {list(PRECISIONS)}, got {p!r}")
    require_coreai("digits_accuracy")
    log = log or (lambda _: None)
    _, _, x, y = load_data()
    x, y = limited_split(x, y, limit)
    fp32 = predict(load_model("reference"), x)  # the labels every stage is compared with
    ane = load_model("ane")
    rows = [{"stage": "reference, PyTorch fp32", "accuracy": float((fp32 == y).double().mean()),
             "agreement_with_fp32": 1.0, "errors": int((fp32 != y).sum())}]
    tmp = tempfile.TemporaryDirectory() if work_dir is None else None
    folder = Path(tmp.name if tmp else work_dir)
    try:
        for precision in precisions:
            path = export_model(ane, torch.zeros(batch, 3, 64, 64), folder / f"digits_{precision}.aimodel",
                                precision=precision, output_names=["logits"], overwrite=True,
                                metadata={"ane_vit.base_arch": "micro-moat", "ane_vit.weights": "trained (digits)"})
            with AIModelRunner(path) as run:
                labels = predict_aimodel(run, x)
            rows.append({
                "stage": f"Core AI program {precision}, Apple's runtime", "precision": precision,
                "accuracy": float((labels == y).double().mean()),
                "agreement_with_fp32": float((labels == fp32).double().mean()),
                "errors": int((labels != y).sum()), "bytes": aimodel_nbytes(path),
            })
            log(f"Core AI {precision}: accuracy {rows[-1]['accuracy']:.4f}, agreement {rows[-1]['agreement_with_fp32']:.4f}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {
        "model": "micro-moat (ane_vit.digits), ANE layout, trained weights",
        "split": {"n_test": len(y), "subset": limit is not None, "seed": 0, "test_fraction": 0.2, "batch": batch},
        "stages": rows,
        "provenance": {
            "what": ("accuracy on the digits test split; Core AI programs (torch.export + coreai-torch, float16 via "
                     "coreai_opt.casting.cast_to_16_bit_precision) run by Apple's Core AI runtime from the coreai-core "
                     "wheel (a CPU runtime on Linux); labels compared with the PyTorch float32 reference model. "
                     "No timing is recorded (the machine was shared)."),
            "command": "python -m ane_vit.coreai accuracy --overwrite" + (f" --limit {limit}" if limit else ""),
            "machine": f"{platform.system()} {platform.machine()} ({_cpu_model()}, {os.cpu_count()} logical CPUs)",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"ane_vit": __version__, "torch": torch.__version__, "numpy": np.__version__, **coreai_versions()},
        },
    }


def format_accuracy_table(results: dict[str, Any]) -> str:
    """The accuracy table as text, one line per stage."""
    lines = [f"{'stage':40s} {'accuracy':>9s} {'agree fp32':>10s} {'MB':>7s}"]
    for r in results["stages"]:
        size = f"{r['bytes'] / 1e6:7.3f}" if "bytes" in r else f"{'':7s}"
        lines.append(f"{r['stage']:40s} {r['accuracy']:9.2%} {r['agreement_with_fp32']:10.2%} {size}")
    return "\n".join(lines)

"""What each compression method does to a program: bytes, ratio to float16, PSNR of the output.

``compression_study`` exports a MOAT with non-trivial weights (``ane_vit.testing.randomize_``:
a fresh model's identity norms and zero embeddings would be folded away by the converter),
compresses it with every method of ``STUDY_METHODS``, and runs each program with
``ane_vit.interpret`` on one fixed input, comparing its output with the float16 program's.
``python -m ane_vit.compress study`` writes the result to ``results/compression_tiny_moat.json``.
For the trained digits model, ``ane_vit.digits.evaluate`` measures accuracy instead.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import methods

__all__ = ["STUDY_METHODS", "compression_study"]

#: name -> (method, arguments, deployment target of the exported program it compresses)
STUDY_METHODS: dict[str, tuple[str, dict, str]] = {
    "palettize 8 bit": ("palettize", {"nbits": 8}, "iOS16"),
    "palettize 6 bit": ("palettize", {"nbits": 6}, "iOS16"),
    "palettize 4 bit": ("palettize", {"nbits": 4}, "iOS16"),
    "palettize 2 bit": ("palettize", {"nbits": 2}, "iOS16"),
    "palettize 4 bit, groups of 16": ("palettize", {"nbits": 4, "group_size": 16}, "iOS18"),
    "int8 per channel": ("int8", {}, "iOS16"),
    "int4 blocks of 32": ("int4-block", {"block_size": 32}, "iOS18"),
    "prune 50 %": ("prune", {"sparsity": 0.5}, "iOS16"),
    "prune 75 %": ("prune", {"sparsity": 0.75}, "iOS16"),
    "prune 2:4": ("prune-n:m", {"n": 2, "m": 4}, "iOS16"),
}
_FUNCTIONS = {
    "palettize": methods.palettize, "int8": methods.quantize_int8, "int4-block": methods.quantize_int4_block,
    "prune": methods.prune_magnitude, "prune-n:m": methods.prune_n_m,
}


def compression_study(base_arch: str = "tiny-moat-0", size: int = 256, seed: int = 0,
                      log: Callable[[str], None] | None = None) -> dict:
    """Bytes, ratio to float16 and output PSNR against the float16 program, per method (JSON-ready)."""
    from ..export import export_model, package_nbytes, save_program
    from ..export.metadata import _dist_version
    from ..interpret import run_program
    from ..moat import build_model
    from ..testing import psnr, randomize_

    log = log or (lambda _: None)
    shape = (1, 3, size, size)
    config, model = build_model(shape, base_arch, attention_mode="global", num_classes=None)
    randomize_(model, seed=seed)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        programs = {t: export_model(model, x, Path(tmp) / f"fp16_{t}.mlpackage", config=config, minimum_deployment_target=t)
                    for t in ("iOS16", "iOS18")}
        reference = run_program(programs["iOS16"], {"x": x.numpy()})
        fp16_bytes = package_nbytes(programs["iOS16"])
        rows.append({"method": "fp16", "bytes": fp16_bytes, "ratio_to_fp16": 1.0, "psnr_db": float("inf"),
                     "minimum_target": "iOS16"})
        for name, (method, kwargs, target) in STUDY_METHODS.items():
            out = _FUNCTIONS[method](programs[target], **kwargs)
            path = save_program(out, Path(tmp) / f"{len(rows)}.mlpackage")
            got = run_program(path, {"x": x.numpy()})
            worst = min(psnr(reference[k], got[k]) for k in reference)
            family = "palettize-grouped" if "group_size" in kwargs else method
            rows.append({"method": name, "bytes": package_nbytes(path), "ratio_to_fp16": fp16_bytes / package_nbytes(path),
                         "psnr_db": worst, "minimum_target": methods.METHOD_TARGETS[family], "settings": kwargs})
            log(f"{name}: {rows[-1]['bytes'] / 1e6:.2f} MB, {rows[-1]['ratio_to_fp16']:.2f}x, {worst:.1f} dB")
    import coremltools as ct

    return {
        "model": f"{base_arch}, {size}x{size}, global attention, randomize_(seed={seed})",
        "rows": rows,
        "provenance": {
            "what": "bytes on disk and PSNR (worst of the four stage outputs) against the float16 program, both run "
                    "by ane_vit.interpret on one fixed random input; not Core ML, not a latency",
            "machine": f"{platform.system()} {platform.machine()}",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - start, 1),
            "versions": {"torch": torch.__version__, "coremltools": ct.__version__, "numpy": np.__version__,
                         "scikit-learn": _dist_version("scikit-learn")},
        },
    }

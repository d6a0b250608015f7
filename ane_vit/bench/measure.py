"""Measuring on this machine: the PyTorch CPU latency of modules (median and nearest-rank
p90) and the provenance of the numbers (machine, versions, date, command); the public names
are re-exported by ``ane_vit.bench``. No Neural Engine latency is measured here.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from .._versions import dist_version as _version
from .results import KINDS, SCHEMA_VERSION


def _summary(times: list[float], runs: int, warmup: int) -> dict:
    times = sorted(times)
    p90 = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]  # nearest-rank percentile
    return {"median_ms": statistics.median(times), "p90_ms": p90, "runs": runs, "warmup": warmup, "threads": torch.get_num_threads()}


@torch.no_grad()
def cpu_latency_interleaved(calls: Sequence[tuple[nn.Module, torch.Tensor]], runs: int = 20, warmup: int = 3) -> list[dict]:
    """PyTorch CPU latency of several ``module(example)`` calls timed in turn (A, B, A, B...).

    Interleaving spreads any change of load on a shared machine evenly over the models, so
    their ratio stays fair. Each gets ``warmup`` untimed calls first; returns one
    ``cpu_latency``-style dict per call, in order.

    Shapes: each ``example``: whatever its ``module`` takes.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for module, example in calls:
        for _ in range(warmup):
            module(example)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(runs):
        for (module, example), bucket in zip(calls, times):
            start = time.perf_counter()
            module(example)
            bucket.append((time.perf_counter() - start) * 1e3)
    return [_summary(t, runs, warmup) for t in times]


def cpu_latency(module: nn.Module, example: torch.Tensor, runs: int = 20, warmup: int = 3) -> dict:
    """PyTorch CPU latency of ``module(example)``: median and p90 (nearest rank) in ms over
    ``runs`` calls after ``warmup`` untimed calls, in this process with the current torch
    thread count. Returns ``{"median_ms", "p90_ms", "runs", "warmup", "threads"}``.

    Shapes: ``example``: whatever ``module`` takes.
    """
    return cpu_latency_interleaved([(module, example)], runs, warmup)[0]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(command: str | None = None, **settings) -> dict:
    """Where and how the numbers were made: machine (no host name), versions, UTC date,
    command line and settings."""
    from .. import __version__

    return {
        "tool": "ane_vit.bench",
        "schema_version": SCHEMA_VERSION,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "system": platform.system(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_model": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "coremltools": _version("coremltools"),
            "numpy": _version("numpy"),
            "ane_vit": __version__,
        },
        "settings": settings,
        "kinds": dict(KINDS),
        "note": "No Neural Engine latency is produced here: latencies are PyTorch on this CPU.",
    }

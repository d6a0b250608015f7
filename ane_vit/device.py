"""Mac only: measure an exported model with the Core ML runtime, and read its compute plan.

Everything else in ane_vit runs on any OS; this module does not. Core ML *prediction*
needs macOS 13+ (the runtime is part of the OS), and the per-op compute plan needs
macOS 14.4+. On any other system every function that runs a model raises
``RuntimeError`` saying so, before it touches the model. Nothing here estimates or
invents a latency: the numbers are what this Mac measured, written with their provenance
(device, OS, versions, date) by ``save_results`` in the benchmark's JSON format
``{"provenance": {...}, "results": [...]}``. See ``notebooks/07_measuring_on_a_mac.ipynb``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._versions import dist_version as _version

__all__ = ["COMPUTE_UNITS", "measure_latency", "compute_plan", "device_provenance", "save_results"]

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")  # coremltools.ComputeUnit names
_MIN_MACOS_PREDICT = (13, 0)
_MIN_MACOS_PLAN = (14, 4)
# Keys that may differ between results of one run; everything else in a provenance must agree.
_PER_RESULT_KEYS = ("date", "compute_units")


def _macos_version() -> tuple[int, ...] | None:
    if sys.platform != "darwin":
        return None
    release = platform.mac_ver()[0]
    try:
        return tuple(int(p) for p in release.split("."))
    except ValueError:
        return None


def _require_macos(minimum: tuple[int, int], what: str) -> None:
    """Raise ``RuntimeError`` unless this is macOS >= ``minimum`` (with the Core ML runtime)."""
    need = f"{what} requires macOS {minimum[0]}.{minimum[1]}+ with the Core ML runtime"
    version = _macos_version()
    if version is None:
        raise RuntimeError(
            f"{need}; this is {platform.system() or sys.platform} ({platform.platform()}). Elsewhere coremltools "
            "converts and reads models (ane_vit.export, ane_vit.analysis) but cannot run them."
        )
    if version < minimum:
        raise RuntimeError(f"{need}; this is macOS {'.'.join(str(v) for v in version)}.")


def _check_compute_units(compute_units) -> str:
    name = getattr(compute_units, "name", compute_units)  # accept coremltools.ComputeUnit members
    if name not in COMPUTE_UNITS:
        raise ValueError(f"compute_units must be one of {list(COMPUTE_UNITS)}, got {compute_units!r}")
    return name


def _check_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model: {path} (expected an .mlpackage, .mlmodel or .mlmodelc)")
    return path


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def device_provenance() -> dict[str, str]:
    """Where and with what a measurement is taken: device, OS, versions, date (UTC ISO).

    On macOS ``device_model`` is ``sysctl hw.model`` (e.g. ``Mac14,2``) and ``chip`` is
    ``sysctl machdep.cpu.brand_string`` (e.g. ``Apple M2``); elsewhere they are ``unknown``.
    """
    from . import __version__

    mac = sys.platform == "darwin"
    return {
        "platform": platform.platform(),
        "device_model": _sysctl("hw.model") if mac else "unknown",
        "chip": _sysctl("machdep.cpu.brand_string") if mac else "unknown",
        "macos": platform.mac_ver()[0] if mac else "n/a",
        "python": platform.python_version(),
        "coremltools": _version("coremltools"),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "ane_vit": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _random_inputs(spec, seed: int = 0) -> dict[str, Any]:
    """One random value per model input, built from the model description (fixed shapes).

    Shapes: multi-array inputs as declared (e.g. ``x: (B, 3, H, W)``); image inputs as a
    ``W x H`` RGB ``PIL.Image``.
    """
    import numpy as np
    from coremltools.proto import FeatureTypes_pb2

    codes = FeatureTypes_pb2.ArrayFeatureType
    rng = np.random.default_rng(seed)
    dtypes = {codes.FLOAT32: np.float32, codes.FLOAT16: np.float16, codes.DOUBLE: np.float64, codes.INT32: np.int32}
    values: dict[str, Any] = {}
    for feature in spec.description.input:
        kind = feature.type.WhichOneof("Type")
        if kind == "multiArrayType":
            array = feature.type.multiArrayType
            shape = tuple(int(s) for s in array.shape)
            dtype = dtypes.get(array.dataType)
            if dtype is None:
                raise ValueError(f"input {feature.name!r}: unsupported array data type {array.dataType}")
            values[feature.name] = rng.random(shape).astype(dtype)
        elif kind == "imageType":
            from PIL import Image

            image = feature.type.imageType
            pixels = rng.integers(0, 256, size=(image.height, image.width, 3), dtype=np.uint8)  # (H, W, 3)
            values[feature.name] = Image.fromarray(pixels, "RGB")
        else:
            raise ValueError(f"input {feature.name!r}: cannot make a random value for a {kind} input")
    return values


def _latency_summary(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, nearest-rank p90, min and mean of per-run latencies in ms (the benchmark's rule)."""
    if not times_ms:
        raise ValueError("need at least one timing")
    ordered = sorted(times_ms)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": p90,
        "min_ms": ordered[0],
        "mean_ms": statistics.fmean(ordered),
    }


def measure_latency(path: str | os.PathLike, compute_units: str = "CPU_AND_NE", runs: int = 50, warmup: int = 5) -> dict:
    """Load a Core ML model on this Mac and time its predictions (macOS 13+ only).

    Measures, in milliseconds: ``load_ms`` (``MLModel(...)``: compiling the package and
    preparing it for the compute units, so the first load after export is the slowest),
    ``first_prediction_ms``, then after ``warmup`` untimed predictions the ``median_ms``,
    ``p90_ms`` (nearest rank), ``min_ms`` and ``mean_ms`` of ``runs`` timed predictions on
    one random input. Wall-clock time around ``predict`` in Python, so it includes the
    Python and input-copy overhead that Xcode's performance report leaves out.

    Args:
        path: an ``.mlpackage`` (or ``.mlmodel``/``.mlmodelc``).
        compute_units: one of ``COMPUTE_UNITS``; ``CPU_AND_NE`` lets Core ML use the ANE.
        runs, warmup: timed and untimed predictions.

    Returns:
        a dict with the keys ``kind`` (``"measured"``), ``model``, ``compute_units``,
        ``runs``, ``warmup``, ``load_ms``, ``first_prediction_ms``, ``median_ms``,
        ``p90_ms``, ``min_ms``, ``mean_ms`` and ``provenance``.

    Raises:
        RuntimeError: not macOS 13+ (checked before anything else is done).
    """
    units = _check_compute_units(compute_units)
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive int, got {runs!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    _require_macos(_MIN_MACOS_PREDICT, "measure_latency")
    path = _check_path(path)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import coremltools as ct

    start = time.perf_counter()
    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[units])
    load_ms = (time.perf_counter() - start) * 1e3
    inputs = _random_inputs(model.get_spec())

    start = time.perf_counter()
    model.predict(inputs)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        model.predict(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict(inputs)
        times.append((time.perf_counter() - start) * 1e3)

    provenance = device_provenance()
    provenance["compute_units"] = units
    return {
        "kind": "measured",
        "model": path.name,
        "compute_units": units,
        "runs": runs,
        "warmup": warmup,
        "load_ms": load_ms,
        "first_prediction_ms": first_ms,
        **_latency_summary(times),
        "provenance": provenance,
    }


def _device_name(device) -> str:
    names = {"MLCPUComputeDevice": "CPU", "MLGPUComputeDevice": "GPU", "MLNeuralEngineComputeDevice": "ANE"}
    return names.get(type(device).__name__, type(device).__name__)


def compute_plan(path: str | os.PathLike, compute_units: str = "CPU_AND_NE") -> dict:
    """Core ML's plan for running each op of an ML Program: preferred device and cost (macOS 14.4+).

    Uses ``coremltools.models.compute_plan.MLComputePlan`` on the compiled model. For every
    non-const op of the ``main`` function: its type, first output name, the device Core ML
    prefers (``CPU``, ``GPU`` or ``ANE``), the devices that support it, and Core ML's
    estimated share of the total cost (0..1). These are the runtime's plan and estimate,
    not a timing.

    Returns:
        a dict with the keys ``kind`` (``"compute_plan"``), ``model``, ``compute_units``,
        ``operations`` (a list), ``ops_by_device``, ``cost_by_device`` and ``provenance``.

    Raises:
        RuntimeError: not macOS 14.4+ (checked before anything else is done).
    """
    units = _check_compute_units(compute_units)
    _require_macos(_MIN_MACOS_PLAN, "compute_plan")
    path = _check_path(path)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import coremltools as ct
    from coremltools.models.compute_plan import MLComputePlan

    model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[units])
    plan = MLComputePlan.load_from_path(model.get_compiled_model_path(), compute_units=ct.ComputeUnit[units])
    program = plan.model_structure.program
    if program is None:
        raise ValueError(f"{path.name} is not an ML Program; compute_plan reads ML Programs (.mlpackage)")
    operations = []
    for index, op in enumerate(program.functions["main"].block.operations):
        if op.operator_name == "const":
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        cost = plan.get_estimated_cost_for_mlprogram_operation(op)
        operations.append(
            {
                "index": index,
                "op": op.operator_name,
                "output": op.outputs[0].name if op.outputs else "",
                "preferred_device": _device_name(usage.preferred_compute_device) if usage else "unknown",
                "supported_devices": sorted(_device_name(d) for d in usage.supported_compute_devices) if usage else [],
                "estimated_cost": float(cost.weight) if cost is not None else None,
            }
        )
    ops_by_device: dict[str, int] = {}
    cost_by_device: dict[str, float] = {}
    for op in operations:
        device = op["preferred_device"]
        ops_by_device[device] = ops_by_device.get(device, 0) + 1
        cost_by_device[device] = cost_by_device.get(device, 0.0) + (op["estimated_cost"] or 0.0)
    provenance = device_provenance()
    provenance["compute_units"] = units
    return {
        "kind": "compute_plan",
        "model": path.name,
        "compute_units": units,
        "operations": operations,
        "ops_by_device": ops_by_device,
        "cost_by_device": cost_by_device,
        "provenance": provenance,
    }


def save_results(
    results: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write device results as ``{"provenance": {...}, "results": [...]}`` (the benchmark's format).

    The shared provenance is taken from ``provenance`` or from the results themselves
    (``measure_latency``/``compute_plan`` attach theirs); results from different machines or
    versions raise ``ValueError`` (save them separately). Each result keeps its own
    ``date`` and ``compute_units`` and gets ``"kind": "measured"`` unless it has a kind.
    A result without any provenance is refused: a measurement must say where it was made.
    """
    if isinstance(results, Mapping):
        results = [results]
    rows = []
    shared: dict[str, Any] | None = dict(provenance) if provenance is not None else None
    for i, result in enumerate(results):
        if not isinstance(result, Mapping):
            raise TypeError(f"each result must be a dict, got {type(result).__name__} at index {i}")
        row = dict(result)
        own = row.pop("provenance", None)
        row.setdefault("kind", "measured")
        if own is not None:
            for key in _PER_RESULT_KEYS:
                if key in own:
                    row.setdefault(key, own[key])
            common = {k: v for k, v in own.items() if k not in _PER_RESULT_KEYS}
            if shared is None:
                shared = common
            elif provenance is None and common != {k: v for k, v in shared.items() if k not in _PER_RESULT_KEYS}:
                raise ValueError(f"result {i} was measured with a different provenance ({common}) than {shared}; save it separately")
        rows.append(row)
    if shared is None:
        raise ValueError("no provenance: pass provenance=... or results from measure_latency/compute_plan")
    if "date" not in shared:
        dates = sorted(r["date"] for r in rows if "date" in r)
        shared["date"] = dates[0] if dates else datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": shared, "results": rows}, indent=2, sort_keys=False) + "\n")
    return path

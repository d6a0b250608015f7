"""Mac only: what the Core AI stack does on Apple hardware and nowhere else.

On Linux the ``coreai-core`` wheel runs a program on the CPU with a runtime of its own. The
things that make Core AI a deployment path need macOS with the Core AI framework (macOS 27;
the wheel's runtime says so too): choosing the compute unit at load time (*specialization*:
``SpecializationOptions``, ``ComputeUnitKind``), the per-op compute plan (which device each
op runs on: the Neural Engine *residency* of a model), ahead-of-time compilation with
``xcrun coreai-build`` (Xcode 27+), and Apple's Core AI Debugger app. Every function here
checks the platform first and raises ``RuntimeError`` saying what it needs, before touching
the model, so chapter 10's Mac cells fail clearly off a Mac and the tests check exactly that.

Nothing here has run on a Mac in this repository's CI: the calls follow Apple's documented
Python API of coreai-core 1.0.0b3 / coreai-torch 0.4.3 (``coreai.runtime``,
``coreai_torch.debugging.compute_plan``) and the ``coreai-build`` invocation of Apple's
``working-with-coreai`` skill file. A compute plan or a compiled asset is a fact about a
device; record it with ``ane_vit.device.device_provenance`` when you save it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .paths import check_aimodel
from .runtime import run_sync
from .stack import require_coreai

__all__ = ["COMPUTE_UNIT_KINDS", "COREAI_MIN_MACOS", "require_coreai_framework", "specialization_options",
           "compute_plan", "compile_aimodel"]

#: Compute-unit names Core AI specialises for (``coreai.runtime.ComputeUnitKind`` constructors).
COMPUTE_UNIT_KINDS = ("cpu", "gpu", "neural_engine")
#: First macOS with the Core AI framework (``coreai.runtime`` uses the OS framework from here on).
COREAI_MIN_MACOS = 27


def _macos_major() -> int | None:
    if sys.platform != "darwin":
        return None
    try:
        return int(platform.mac_ver()[0].split(".")[0])
    except ValueError:
        return None


def require_coreai_framework(what: str) -> None:
    """Raise ``RuntimeError`` unless this is macOS 27+ with the Core AI framework (then check the wheel too)."""
    major = _macos_major()
    need = f"{what} needs macOS {COREAI_MIN_MACOS}+ with the Core AI framework on Apple silicon"
    if major is None:
        raise RuntimeError(
            f"{need}; this is {platform.system() or sys.platform} ({platform.machine()}). Elsewhere the coreai-core "
            "wheel converts, summarises and runs programs on the CPU (ane_vit.coreai export, run, summary) but cannot "
            "choose a compute unit, plan, or compile for a device."
        )
    if major < COREAI_MIN_MACOS:
        raise RuntimeError(f"{need}; this is macOS {platform.mac_ver()[0]}.")
    require_coreai(what)


def _check_unit(compute_unit: str) -> str:
    if compute_unit not in COMPUTE_UNIT_KINDS:
        raise ValueError(f"compute_unit must be one of {list(COMPUTE_UNIT_KINDS)}, got {compute_unit!r}")
    return compute_unit


def specialization_options(compute_unit: str | None = None, debug: bool = False) -> Any:
    """``coreai.runtime.SpecializationOptions`` preferring ``compute_unit`` (None: Apple's default).

    Apple's guidance: load with the default options, which leave Core AI the most freedom,
    unless you align the model with one unit (``guidance.md`` of apple/coreai-models).
    """
    if compute_unit is not None:
        _check_unit(compute_unit)
    require_coreai_framework("specialization_options")
    from coreai.runtime import ComputeUnitKind, SpecializationOptions

    if compute_unit is None:
        options = SpecializationOptions.default()
    else:
        kind = getattr(ComputeUnitKind, compute_unit)()
        options = SpecializationOptions.from_preferred_compute_unit_kind(kind)
    return options.with_debug(enabled=True) if debug else options


def compute_plan(path: str | os.PathLike, compute_unit: str | None = "neural_engine") -> dict[str, Any]:
    """Which device each op of a Core AI program is scheduled on, as a JSON-ready dict.

    Loads the program with ``specialization_options(compute_unit, debug=True)`` through
    coreai-torch's ``ComputePlan`` and returns its ``to_dict(program)``: one entry per op
    (devices, residency), the device histogram, op names. Ops off the Neural Engine are what
    Apple's Neural Engine rules call a residency problem.
    """
    if compute_unit is not None:
        _check_unit(compute_unit)
    require_coreai_framework("compute_plan")
    p = check_aimodel(path)
    from coreai.authoring import AIModelAsset
    from coreai_torch.debugging.compute_plan import ComputePlan

    program = AIModelAsset.load(p).program
    options = specialization_options(compute_unit)
    plan = run_sync(ComputePlan.from_program(program, options))  # works inside Jupyter too
    return {"model": str(p), "compute_unit": compute_unit or "default", **plan.to_dict(program)}


def compile_aimodel(path: str | os.PathLike, platform_name: str = "macOS",
                    preferred_compute: str | None = "neural-engine") -> str:
    """Compile a Core AI program ahead of time: ``xcrun coreai-build compile PATH --platform P
    [--preferred-compute C]``; returns the tool's output.

    The tool writes ``.aimodelc`` assets, one per device architecture; ``xcrun coreai-build
    compile --help`` lists its options (Apple: "Compiling Core AI models ahead of time").
    """
    if platform_name not in ("macOS", "iOS", "iPadOS", "visionOS", "watchOS", "tvOS"):
        raise ValueError(f"platform_name must be an Apple platform name such as 'macOS' or 'iOS', got {platform_name!r}")
    if sys.platform != "darwin" or shutil.which("xcrun") is None:
        raise RuntimeError(
            f"compile_aimodel needs a Mac with Xcode 27+ (xcrun coreai-build); this is "
            f"{platform.system() or sys.platform} ({platform.machine()})."
        )
    p = check_aimodel(path)
    command = ["xcrun", "coreai-build", "compile", str(p), "--platform", platform_name]
    if preferred_compute:
        command += ["--preferred-compute", preferred_compute]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(p).parent)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout

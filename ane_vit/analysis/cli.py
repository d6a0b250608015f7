"""The analysis command line, ``python -m ane_vit.analysis`` (run by ``__main__.py``)."""

from __future__ import annotations

import argparse
import sys

from ..coreml_log import quiet_native_library_warnings
from .program import analyze

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m ane_vit.analysis model.mlpackage [--json] [--top N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.analysis",
        description="Report what a Core ML ML Program contains: ops, shapes, bytes (dense, and padded to "
        "64-byte rows as two bounds: the lower pads only the program's outputs, the upper every op output), "
        "weights, FLOPs, layout ops (split into those that move the last, width, axis and those that keep "
        "it) and ANE-readiness findings. Sizes in MB = 10^6 bytes. Facts about the program, not latency.",
    )
    parser.add_argument("model", help="path to a saved .mlpackage (ML Program)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="largest op outputs to list (default 10)")
    args = parser.parse_args(argv)
    quiet_native_library_warnings()  # before coremltools is imported: see ane_vit.coreml_log
    if args.top < 0:
        parser.error(f"--top must be >= 0, got {args.top}")
    try:
        report = analyze(args.model)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    sys.stdout.write((report.to_json() if args.json else report.table(top=args.top)) + "\n")
    return 0


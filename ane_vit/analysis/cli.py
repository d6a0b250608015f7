"""The analysis command line, ``python -m ane_vit.analysis`` (run by ``__main__.py``)."""

from __future__ import annotations

import argparse
import sys

from .._interrupt import check_interrupted, stops_on_ctrl_c
from ..coreml_log import quiet_native_library_warnings
from .program import analyze

__all__ = ["main"]


@stops_on_ctrl_c("python -m ane_vit.analysis")  # also a Ctrl-C swallowed while coremltools imports
def main(argv: list[str] | None = None) -> int:
    """``python -m ane_vit.analysis model.mlpackage [--json] [--top N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.analysis",
        description="Report what a Core ML ML Program contains: ops, shapes, bytes (dense and "
        "64-byte padded), weights, FLOPs, layout ops and ANE-readiness findings. Facts about "
        "the program, not latency.",
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
    except (FileNotFoundError, ValueError) as err:  # ane_vit.interpret.ProgramLoadError names the file
        parser.exit(2, f"error: {err}\n")
    check_interrupted()  # a swallowed Ctrl-C: stop before printing a report
    sys.stdout.write((report.to_json() if args.json else report.table(top=args.top)) + "\n")
    return 0


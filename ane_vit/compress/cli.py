"""The compression command line, ``python -m ane_vit.compress IN.mlpackage <method> -o OUT.mlpackage``.

Exactly one method per call: ``--palettize BITS [--group-size G]``, ``--int8``,
``--int4-block SIZE``, ``--prune FRACTION`` or ``--prune N:M``. As ``python -m ane_vit.export``:
an existing output is never replaced without ``--overwrite``, errors are one clear line,
each written file is one line (path, size, ratio to the input, weights compressed).

Nothing lost, nothing silent: the output path is resolved once (``~`` expanded) and checked
(existing, unwritable folder) before any work; the input is checked to be a whole program;
a method that would compress no weight, or a program with NaN or infinite weights, is
refused; the program is saved atomically (``ane_vit.export.save_program``: an interrupted
``--overwrite`` keeps the old program); a Ctrl-C stops the command without writing, even one
that arrives while coremltools imports its dependencies (``ane_vit._interrupt``).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .._interrupt import check_interrupted, stops_on_ctrl_c
from ..coreml_log import quiet_native_library_warnings
from . import methods


def _prune_arg(text: str):
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if match:
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise argparse.ArgumentTypeError(f"--prune N:M needs 0 < N < M, got {text!r}")
        return (n, m)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--prune takes a fraction (e.g. 0.5) or N:M (e.g. 2:4), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"--prune fraction must lie strictly between 0 and 1, got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.compress",
        description="Compress the weights of a converted ML Program (.mlpackage) with coremltools.optimize.coreml.",
        epilog="OS needed: palettize (per tensor), --int8, --prune: iOS 16 / macOS 13; "
               "--group-size and --int4-block: iOS 18 / macOS 15 (export the input with "
               "`python -m ane_vit.export ... --deployment-target iOS18`). "
               "`python -m ane_vit.compress study` compresses tiny-moat-0 with every method (bytes, PSNR).",
    )
    parser.add_argument("input", metavar="IN.mlpackage", help="the program to compress")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--palettize", type=int, choices=methods.PALETTE_BITS, metavar="BITS",
                     help=f"k-means palettization with BITS-bit indices, one of {methods.PALETTE_BITS}")
    how.add_argument("--int8", action="store_true", help="int8 weights, one scale per output channel")
    how.add_argument("--int4-block", type=int, metavar="SIZE", help="int4 weights, one scale per block of SIZE input channels (iOS18)")
    how.add_argument("--prune", type=_prune_arg, metavar="FRACTION|N:M", help="magnitude pruning (e.g. 0.5) or n:m pruning (e.g. 2:4)")
    parser.add_argument("--group-size", type=int, default=None, metavar="G",
                        help="with --palettize: one table per G output channels (iOS18) instead of one per tensor")
    parser.add_argument("--weight-threshold", type=int, default=methods.WEIGHT_THRESHOLD, metavar="N",
                        help=f"compress only constants with more than N elements (default: {methods.WEIGHT_THRESHOLD}, "
                             "coremltools' own; 0 compresses every constant coremltools can, i.e. rank >= 2 and >= 10 elements)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.mlpackage", help="where to save the compressed program")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def _write_json_atomically(text: str, output: Path) -> None:
    """Write ``text`` to a temporary file beside ``output``, then rename it into place."""
    check_interrupted()
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _study(argv: Sequence[str]) -> int:
    """``python -m ane_vit.compress study [-o FILE] [--overwrite]``: every method on tiny-moat-0 at 256."""
    import json

    from ..export.paths import _check_target

    parser = argparse.ArgumentParser(prog="python -m ane_vit.compress study",
                                     description="Compress tiny-moat-0 (256x256, random non-trivial weights) with every method; "
                                                 "bytes and output PSNR against the float16 program, run by ane_vit.interpret.")
    parser.add_argument("-o", "--output", default="results/compression_tiny_moat.json", metavar="FILE")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    output = Path(os.path.expanduser(args.output)).absolute()
    try:
        _check_target(output, args.overwrite)  # existing file, unwritable folder: before minutes of work
    except OSError as err:
        parser.error(str(err))
    from .study import compression_study

    result = compression_study(log=print)
    _write_json_atomically(json.dumps(result, indent=2) + "\n", output)
    print(output)
    return 0


@stops_on_ctrl_c("python -m ane_vit.compress")
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m ane_vit.compress IN.mlpackage METHOD -o OUT.mlpackage``; returns the exit status.

    Usage errors (no input, an input that is not a program, an existing output without
    ``--overwrite``, an output folder that cannot be written, an option the method does not
    take, a program whose target is too old for the method, a method that would compress no
    weight, non-finite weights) exit with status 2 and write nothing; Ctrl-C exits with 130.
    """
    quiet_native_library_warnings()  # before coremltools is imported: see ane_vit.coreml_log
    os.environ.setdefault("TQDM_DISABLE", "1")
    argv = list(argv) if argv is not None else None
    import sys

    if (argv if argv is not None else sys.argv[1:])[:1] == ["study"]:
        return _study((argv if argv is not None else sys.argv[1:])[1:])
    return _compress(argv)


def _compress(argv: list[str] | None) -> int:
    from ..export import resolve_target, save_program

    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.group_size is not None and args.palettize is None:
        parser.error("--group-size goes with --palettize")
    source = Path(os.path.expanduser(args.input))
    if not source.exists():
        parser.error(f"no such input: {args.input}")
    wanted = Path(os.path.expanduser(args.output)).absolute()
    if wanted == source.absolute() or wanted.resolve() == source.resolve():
        parser.error("the output must differ from the input")
    try:
        target = resolve_target(args.output, overwrite=args.overwrite)  # '~' expanded once, checked before the work
    except (ValueError, OSError) as err:
        parser.error(str(err))
    if args.weight_threshold < 0:
        parser.error(f"--weight-threshold must be >= 0 (elements), got {args.weight_threshold}")
    threshold = {"weight_threshold": args.weight_threshold}
    try:
        if args.palettize is not None:
            out = methods.palettize(source, args.palettize, group_size=args.group_size, **threshold)
        elif args.int8:
            out = methods.quantize_int8(source, **threshold)
        elif args.int4_block is not None:
            out = methods.quantize_int4_block(source, args.int4_block, **threshold)
        elif isinstance(args.prune, tuple):
            out = methods.prune_n_m(source, *args.prune, **threshold)
        else:
            out = methods.prune_magnitude(source, args.prune, **threshold)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    try:
        target = save_program(out, target, overwrite=args.overwrite)
    except (ValueError, OSError) as err:  # the output appeared, or its folder went, during the work
        parser.error(str(err))
    from ..export.metadata import package_nbytes

    size, before = package_nbytes(target), package_nbytes(source)
    record = methods.compression_record(out)
    print(f"{target}  {size / 1e6:.3f} MB  ({before / size:.2f}x smaller than the input)  "
          f"{methods.record_summary(record)}; {methods.weights_summary(record)}")
    return 0

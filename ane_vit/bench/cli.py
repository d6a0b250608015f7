"""The benchmark's command line, ``python -m ane_vit.bench`` (run by ``__main__.py``)."""

from __future__ import annotations

import argparse
import fnmatch
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..coreml_log import quiet_native_library_warnings
from .original import load_original, original_comparison_table, original_note, original_specs
from .plots import plot_bench
from .results import comparison_table, load_results, merge_timings, save_results
from .run import run_benchmark
from .specs import default_specs

__all__ = ["main"]

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.bench",
        description="Build, export and compare the reference and ANE models; write results/<name>.json and .png. "
        "Latency is PyTorch on this CPU, never the Neural Engine.",
    )
    parser.add_argument("--models", nargs="+", metavar="NAME", help="model names or shell patterns (e.g. 'tiny-moat-0*'); see --list; default: all")
    parser.add_argument("--list", action="store_true", help="print the model names and exit")
    parser.add_argument("--output-dir", default="results", help="folder for the JSON and the chart (default: results)")
    parser.add_argument("--name", help="file stem (default: bench_<os>_cpu, or bench_<os>_cpu_quick with --quick)")
    parser.add_argument("--runs", type=int, help="timed PyTorch runs per model (default 20; 3 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed runs first (default 3; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, fixed for the run (default 1: the least disturbed by other load)")
    parser.add_argument("--pe-type", default="SINGLE_HEAD_RPE", help="MOAT position encoding, a PEType name (default SINGLE_HEAD_RPE, as the seed exported)")
    parser.add_argument("--quick", action="store_true", help="few runs and, unless --models is given, only tiny-moat-0 global")
    parser.add_argument("--no-parity", action="store_true", help="skip the program interpreter parity check")
    parser.add_argument(
        "--with-original", nargs="?", const="", metavar="JSON",
        help="add the original repository's recorded programs (default file: results/original_programs.json) as a third "
        "column and bar, and benchmark the configurations recorded there (choose with --models, see --list)",
    )
    parser.add_argument(
        "--no-timing", action="store_true",
        help="time nothing on this CPU (no PyTorch latency, no export time): program facts only, for a loaded machine",
    )
    parser.add_argument(
        "--keep-timings-from", metavar="JSON",
        help="implies --no-timing: recompute the program facts and keep the CPU timings of this earlier results file "
        "for every model whose program did not change (ane_vit.bench.merge_timings); the others get none",
    )
    parser.add_argument(
        "--local-routes", action="store_true",
        help="instead of the benchmark: convert the local-attention routes (reference, channels_last, channels_first, "
        "batch_rank4) of tiny-moat-0 and -1 and record their program facts in <output-dir>/local_routes.json (no timing)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing results/<name>.json and .png (refused without it)")
    parser.add_argument("--keep-models", metavar="DIR", help="keep the .mlpackage files in DIR, replacing packages of the same name (default: a temporary folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``python -m ane_vit.bench --help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_native_library_warnings()  # before coremltools is imported: see ane_vit.coreml_log
    parser = _parser()
    args = parser.parse_args(argv)
    from ..attention import PEType

    if args.pe_type not in PEType.__members__:
        parser.error(f"--pe-type must be one of {list(PEType.__members__)}, got {args.pe_type!r}")
    if args.local_routes:
        return _local_routes(args, argv, parser)
    original = None
    if args.with_original is not None:
        try:
            original = load_original(args.with_original or None)
        except (OSError, ValueError) as exc:
            parser.error(f"--with-original: {exc}")
    timed = None
    if args.keep_timings_from is not None:
        try:
            timed = load_results(args.keep_timings_from)
        except (OSError, ValueError) as exc:
            parser.error(f"--keep-timings-from: {exc}")
    timing = not (args.no_timing or timed is not None)
    specs = default_specs(args.pe_type) if original is None else original_specs(original)
    if args.list:
        print("\n".join(s.name for s in specs))
        return 0
    if args.models:
        unknown = [p for p in args.models if not any(fnmatch.fnmatchcase(s.name, p) for s in specs)]
        if unknown:
            parser.error(f"unknown model(s) {unknown}; choose from: {', '.join(s.name for s in specs)}")
        specs = [s for s in specs if any(fnmatch.fnmatchcase(s.name, p) for p in args.models)]
    elif args.quick:
        specs = specs[:2] if original is not None else [s for s in specs if s.pair == "tiny-moat-0_256_global"]
    runs = args.runs if args.runs is not None else (3 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if runs < 1 or warmup < 0 or args.threads < 1:
        parser.error(f"need --runs >= 1, --warmup >= 0, --threads >= 1; got {runs}, {warmup}, {args.threads}")
    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".ane_vit_bench_write_test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        print(f"error: cannot write to --output-dir {out_dir}: {exc}", file=sys.stderr)
        return 2
    stem = args.name or f"bench_{platform.system().lower()}_cpu" + ("_quick" if args.quick else "") + ("_original" if original else "")
    existing = [str(p) for p in (out_dir / f"{stem}.json", out_dir / f"{stem}.png") if p.exists()]
    if existing and not args.overwrite:
        # checked before measuring: committed results (with their provenance) are not replaced by accident
        print(f"error: {' and '.join(existing)} already exist(s); pass --overwrite to replace, or --name/--output-dir "
              "to write elsewhere", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = run_benchmark(
        specs,
        runs=runs,
        warmup=warmup,
        threads=args.threads,
        parity=not args.no_parity,
        keep_models=args.keep_models,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        command=shlex.join(["python", "-m", "ane_vit.bench", *argv]),
        timing=timing,
    )
    if timed is not None:
        results = merge_timings(results, timed)
        if results["provenance"]["timings_dropped"]:
            print(f"no timing kept for {', '.join(results['provenance']['timings_dropped'])}: their programs changed "
                  "(re-run without --keep-timings-from on a quiet machine)", file=sys.stderr)
    wall = round(time.perf_counter() - start, 1)
    # the wall time of this run: of the recomputed facts when the timings come from another run
    (results["provenance"] if timed is None else results["provenance"]["program_facts"])["wall_time_s"] = wall
    if original is not None:  # where the third column comes from; its numbers stay in their own file
        prov = original["provenance"]
        results["provenance"]["original"] = {k: prov[k] for k in ("repository", "commit", "date_utc", "citation")}
    json_path = save_results(results, out_dir / f"{stem}.json")
    import matplotlib

    matplotlib.use("Agg")
    from ..plotting import apply_style

    apply_style()
    fig = plot_bench(json_path, out_dir / f"{stem}.png", original=original)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(comparison_table(results))
    if original is not None:
        print()
        print(original_comparison_table(results, original, only_matched=False))
        print(original_note(original))
    print(f"wrote {json_path} and {out_dir / f'{stem}.png'} in {wall:.0f} s", file=sys.stderr)
    return 0



def _local_routes(args: argparse.Namespace, argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """``--local-routes``: convert every route, write the facts with their provenance."""
    from .routes import compare_local_routes, local_routes_table

    path = Path(args.output_dir) / f"{args.name or 'local_routes'}.json"
    if path.exists() and not args.overwrite:
        print(f"error: {path} already exists; pass --overwrite to replace, or --name/--output-dir", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)  # conversions only; nothing is timed
    start = time.perf_counter()
    results = compare_local_routes(
        pe_type=args.pe_type, progress=lambda line: print(line, file=sys.stderr, flush=True),
        command=shlex.join(["python", "-m", "ane_vit.bench", *argv]),
    )
    results["provenance"]["wall_time_s"] = round(time.perf_counter() - start, 1)
    save_results(results, path)
    print(local_routes_table(results))
    print(f"wrote {path}", file=sys.stderr)
    return 0

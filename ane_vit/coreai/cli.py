"""The Core AI command line, ``python -m ane_vit.coreai`` (run by ``__main__.py``).

``export`` (a MOAT to ``.aimodel``), ``run`` (Apple's runtime on a random or given input,
prints the outputs' shapes), ``summary`` (what the program contains), and the three studies
the book reads: ``runtimes`` (-> ``results/coreai_three_runtimes.json``), ``probes``
(-> ``results/coreai_float16_ops.json``) and ``accuracy`` (-> ``results/coreai_digits_accuracy.json``). Usage errors exit with status 2 and one line
saying what was expected and what was given, before any slow work; where Core AI is not
installed every command says so and where it installs. The stack's routine chatter is
filtered (``ane_vit.coreai.quiet``); anything unexpected still shows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..attention import PEType
from ..export.cli import _pe_type_arg  # the same --pe-type as python -m ane_vit.export
from ..moat import ATTENTION_MODES
from .quiet import quiet_coreai_imports

__all__ = ["main"]


def _build_parser(archs: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.coreai",
        description="Apple's Core AI stack for ane_vit's models: export to .aimodel (torch.export + coreai-torch), "
                    "run with Apple's runtime, summarise the program, and the book's two studies.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ex = sub.add_parser("export", help="export a MOAT to a Core AI program (.aimodel)")
    ex.add_argument("--arch", default="tiny-moat-0", choices=list(archs), help="base architecture (default: tiny-moat-0)")
    ex.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("H", "W"), help="input size (default: 256 256)")
    ex.add_argument("--batch", type=int, default=1, metavar="B", help="batch size (default: 1)")
    ex.add_argument("--attention-mode", default="global", choices=list(ATTENTION_MODES), help="default: global")
    ex.add_argument("--pe-type", type=_pe_type_arg, default=PEType.SINGLE_HEAD_RPE, metavar="PE",
                    help=f"position embedding: {', '.join(m.name for m in PEType)} (default: SINGLE_HEAD_RPE)")
    ex.add_argument("--local-window", nargs=2, type=int, default=None, metavar=("H", "W"),
                    help="local attention window (default: build_model's choice)")
    ex.add_argument("--num-classes", type=int, default=None, metavar="N", help="add a classification head; output 'logits'")
    ex.add_argument("--no-split-head", action="store_true", help="one fused softmax over all heads")
    ex.add_argument("--fp16", action="store_true", help="float16 program (coreai_opt.casting.cast_to_16_bit_precision)")
    ex.add_argument("--seed", type=int, default=None, metavar="S",
                    help="random, trained-looking weights (ane_vit.testing.randomize_) instead of the initial ones")
    ex.add_argument("-o", "--output", default=None, metavar="OUT.aimodel",
                    help="the .aimodel to write, or a folder (default: exported_model/<seed's name>_<precision>.aimodel)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing .aimodel")
    rn = sub.add_parser("run", help="run a program with Apple's runtime and print its outputs' shapes")
    rn.add_argument("model", metavar="MODEL.aimodel")
    rn.add_argument("--input", action="append", default=None, metavar="[NAME=]FILE.npy",
                    help="an input array (.npy); repeat as NAME=FILE.npy for several inputs (default: random)")
    rn.add_argument("--seed", type=int, default=0, help="seed of the random input (default: 0)")
    rn.add_argument("--function", default="main", help="function to run (default: main)")
    sm = sub.add_parser("summary", help="what a program contains: ops, dtypes, ranks, constants, size")
    sm.add_argument("model", metavar="MODEL.aimodel")
    sm.add_argument("--json", action="store_true", help="print the full report as JSON")
    rt = sub.add_parser("runtimes", help="PyTorch vs Core ML (interpreted) vs Core AI (Apple's runtime), fp32 and fp16")
    rt.add_argument("-o", "--output", default="results/coreai_three_runtimes.json", metavar="FILE",
                    help="JSON file (default: results/coreai_three_runtimes.json)")
    rt.add_argument("--model", action="append", default=None, metavar="NAME",
                    help="only this study model (repeatable; default: all, see ane_vit.coreai.STUDY_MODELS)")
    rt.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    rt.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default: 1; recorded in the file)")
    pr = sub.add_parser("probes", help="float16 arithmetic of single ops: Apple's runtime vs our interpreter vs exact")
    pr.add_argument("-o", "--output", default="results/coreai_float16_ops.json", metavar="FILE",
                    help="JSON file (default: results/coreai_float16_ops.json)")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    pr.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default: 1; recorded in the file)")
    ac = sub.add_parser("accuracy", help="the digits model's Core AI programs on the digits test split")
    ac.add_argument("-o", "--output", default="results/coreai_digits_accuracy.json", metavar="FILE",
                    help="JSON file (default: results/coreai_digits_accuracy.json)")
    ac.add_argument("--limit", type=int, default=None, metavar="N", help="a stratified subset of N test images (default: all)")
    ac.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    ac.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default: 1; recorded in the file)")
    return parser


def _quiet_progress_bars() -> None:
    """coremltools' tqdm bars: TQDM_DISABLE only works if set before tqdm is imported, and torch
    imports it first; so disable the bars of this (command-line) process directly."""
    os.environ["TQDM_DISABLE"] = "1"
    try:
        import tqdm.std
    except ImportError:
        return
    cls = tqdm.std.tqdm
    if getattr(cls, "_ane_vit_quiet", False):
        return
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    cls._ane_vit_quiet = True
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # its version-support notices


def _export(args, parser) -> int:
    from .paths import default_aimodel_filename, resolve_aimodel_target
    from .save import export_moat

    b, (h, w) = args.batch, args.size
    if min(b, h, w) <= 0:
        parser.error(f"--batch and --size must be positive, got batch {b}, size {h} {w}")
    from ..moat import moat_config

    precision = "float16" if args.fp16 else "float32"
    try:
        config = moat_config(shape=(b, 3, h, w), base_arch=args.arch, attention_mode=args.attention_mode,
                             split_head=not args.no_split_head, pe_type=args.pe_type, num_classes=args.num_classes,
                             local_window_size=tuple(args.local_window) if args.local_window else None)
        name = default_aimodel_filename(config, (b, 3, h, w), precision)
        target = Path(args.output) if args.output else Path("exported_model") / name
        if target.suffix == "":
            target = target / name
        target = resolve_aimodel_target(target, args.overwrite)  # suffix, existing, writable: before converting
    except (TypeError, ValueError, OSError) as err:  # FileExistsError is an OSError
        parser.error(str(err))
    _require(parser, "export")
    try:
        saved = export_moat(args.arch, (b, 3, h, w), args.attention_mode, args.pe_type, not args.no_split_head,
                            target, precision=precision, num_classes=args.num_classes, overwrite=args.overwrite,
                            local_window_size=args.local_window, seed=args.seed)
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    from .paths import aimodel_nbytes

    print(f"{saved}  {precision}  {aimodel_nbytes(saved) / 1e6:.2f} MB")
    return 0


def _require(parser, command: str) -> None:
    from .stack import coreai_status

    ok, message = coreai_status()
    if not ok:
        parser.exit(2, f"error: {command} needs Core AI. {message}\n")


def _load_inputs(specs: list[str] | None, runner, parser) -> dict[str, np.ndarray]:
    from .runtime import random_inputs

    if not specs:
        return random_inputs(runner)
    inputs = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            if len(specs) != 1 or len(runner.input_shapes) != 1:
                parser.error(f"--input {spec!r}: the program has inputs {list(runner.input_shapes)}; use NAME=FILE.npy")
            name, file = next(iter(runner.input_shapes)), spec
        try:
            inputs[name] = np.load(file)
        except (OSError, ValueError) as err:
            parser.error(f"--input {spec!r}: cannot read {file!r} as a .npy array ({err})")
    return inputs


def _run(args, parser) -> int:
    from .paths import check_aimodel

    try:
        check_aimodel(args.model)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    _require(parser, "run")
    from .runtime import AIModelRunner

    try:
        with AIModelRunner(args.model, args.function) as run:
            inputs = _load_inputs(args.input, run, parser)
            outputs = run(inputs)
    except (TypeError, ValueError) as err:  # wrong names, shapes or dtypes; no such function
        parser.error(str(err))
    for name, array in inputs.items():
        print(f"input  {name}: {tuple(np.shape(array))} {np.asarray(array).dtype}")
    for name, array in outputs.items():
        print(f"output {name}: {tuple(array.shape)} {array.dtype}")
    return 0


def _summary(args, parser) -> int:
    from .paths import check_aimodel

    try:
        check_aimodel(args.model)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    _require(parser, "summary")
    from .summary import summarize

    try:
        report = summarize(args.model)
    except ValueError as err:
        parser.error(str(err))
    sys.stdout.write((report.to_json() if args.json else report.table()) + "\n")
    return 0


def _set_threads(args, parser) -> None:
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)


def _write_results(path: Path, results: dict) -> None:
    import torch

    results.setdefault("provenance", {})["torch_threads"] = torch.get_num_threads()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # never a half-written results file


def _check_output(path: Path, overwrite: bool, parser) -> None:
    if path.suffix != ".json":
        parser.error(f"--output must be a .json file, got {str(path)!r}")
    if path.exists() and not overwrite:
        parser.error(f"{path} already exists; pass --overwrite to replace it")


def _runtimes(args, parser) -> int:
    output = Path(args.output)
    _check_output(output, args.overwrite, parser)
    _set_threads(args, parser)
    from .compare import STUDY_MODELS

    unknown = [m for m in args.model or [] if m not in STUDY_MODELS]
    if unknown:
        parser.error(f"unknown --model {unknown}; choose from {list(STUDY_MODELS)}")
    _require(parser, "runtimes")
    _quiet_progress_bars()
    from .compare import format_runtime_table, run_study

    results = run_study(args.model, log=print)
    _write_results(output, results)
    print(format_runtime_table(results))
    print(output)
    return 0


def _probes(args, parser) -> int:
    output = Path(args.output)
    _check_output(output, args.overwrite, parser)
    _set_threads(args, parser)
    _require(parser, "probes")
    _quiet_progress_bars()
    from .compare import run_survey

    results = run_survey()
    _write_results(output, results)
    for p in results["matmul_accumulation_probes"]:
        u = p["ulps_vs_exact"]
        print(f"batch_matmul, sum of {p['k']:5d} terms: Apple {u['apple_runtime']['mean']:6.2f} ulp, "
              f"interpreter {u['interpreter']['mean']:5.2f} ulp (mean)")
    for c in results["cases"]:
        print(f"{c['op']:36s} Apple max {c['apple_runtime']['max']:6.2f} ulp, interpreter max {c['interpreter']['max']:5.2f} ulp")
    print(output)
    return 0


def _accuracy(args, parser) -> int:
    output = Path(args.output)
    _check_output(output, args.overwrite, parser)
    _set_threads(args, parser)
    if args.limit is not None and args.limit < 10:
        parser.error(f"--limit must be >= 10 (images, 10 classes), got {args.limit}")
    _require(parser, "accuracy")
    from .accuracy import digits_accuracy, format_accuracy_table

    results = digits_accuracy(limit=args.limit, log=print)
    _write_results(output, results)
    print(format_accuracy_table(results))
    print(output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ane_vit.coreai COMMAND ...``; returns the exit status (usage errors: 2)."""
    quiet_coreai_imports()  # before the stack is imported: see ane_vit.coreai.quiet
    from ..moat import ARCHITECTURES

    parser = _build_parser(sorted(ARCHITECTURES))
    args = parser.parse_args(argv)
    commands = {"export": _export, "run": _run, "summary": _summary, "runtimes": _runtimes, "probes": _probes,
                "accuracy": _accuracy}
    return commands[args.command](args, parser)

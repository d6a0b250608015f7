"""The export command line, ``python -m ane_vit.export``: its parser, its plan and ``main``.

``main`` is re-exported by ``ane_vit.export``; ``ane_vit/export/__main__.py``
runs it. Each MOAT is exported with ``ane_vit.export.export_moat``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..attention import PEType
from ..coreml_log import import_coremltools, quiet_native_library_warnings
from ..moat import ATTENTION_MODES
from . import save  # save.export_moat is looked up when main runs, so a test can patch it
from .convert import DEFAULT_DEPLOYMENT_TARGET
from .metadata import package_nbytes
from .paths import DEPLOYMENT_TARGETS, _check_target, deployment_target, moat_filename

_DEFAULT_SHAPES = ((512, 512), (256, 256))  # the seed's export.py, in its order


def _pe_type_arg(text: str) -> PEType:
    name = text.split(".")[-1]
    for member in PEType:
        if member.name.lower() == name.lower():
            return member
    raise argparse.ArgumentTypeError(f"unknown PE type {text!r}; choose from {', '.join(m.name for m in PEType)}")


def _target_arg(text: str) -> str:
    try:
        return deployment_target(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _build_parser(archs: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.export",
        description=(
            "Export MOAT models to Core ML ML Programs (.mlpackage, float16, fixed input shape). "
            "With no arguments: what the seed's export.py exported - tiny-moat-0, SINGLE_HEAD_RPE, "
            "global and local attention, 512x512 and 256x256 inputs, batch 1 - into exported_model/."
        ),
    )
    parser.add_argument("--arch", default="tiny-moat-0", choices=list(archs), help="base architecture (default: tiny-moat-0)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--size", nargs=2, type=int, action="append", metavar=("H", "W"),
                       help="input height and width; repeat for several (default: 512 512 and 256 256)")
    shape.add_argument("--shape", nargs=4, type=int, action="append", metavar=("B", "C", "H", "W"),
                       help="full input shape instead of --size/--batch; repeatable")
    parser.add_argument("--batch", type=int, default=None, metavar="B", help="batch size with --size (default: 1)")
    parser.add_argument("--attention-mode", action="append", choices=[*ATTENTION_MODES, "both"],
                        help="global, local or both; repeatable (default: both)")
    parser.add_argument("--pe-type", type=_pe_type_arg, default=PEType.SINGLE_HEAD_RPE, metavar="PE",
                        help=f"position embedding: {', '.join(m.name for m in PEType)} (default: SINGLE_HEAD_RPE)")
    parser.add_argument("--local-window", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="local attention window (default: build_model's choice, 8 8 for 256 and 512 inputs)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N", help="add a classification head; output 'logits'")
    parser.add_argument("--output-dir", default="exported_model", metavar="DIR", help="folder for the .mlpackage files (default: exported_model)")
    parser.add_argument("--no-split-head", action="store_true", help="one fused softmax over all heads instead of one per head")
    parser.add_argument("--image-input", action="store_true", help="RGB image input, ImageNet normalisation inside the model")
    parser.add_argument("--enumerated-sizes", action="store_true",
                        help="one program per attention mode that takes every --size/--shape (the first is the default); "
                             "needs --pe-type LePE_FUSED or NONE and global attention")
    parser.add_argument("--deployment-target", type=_target_arg, default=DEFAULT_DEPLOYMENT_TARGET, metavar="TARGET",
                        help=f"minimum OS of the program: {', '.join(DEPLOYMENT_TARGETS)} (default: {DEFAULT_DEPLOYMENT_TARGET}); "
                             "iOS18 / macOS15 for `python -m ane_vit.compress --int4-block` or `--group-size`. "
                             "A target other than the default is added to the file name")
    parser.add_argument("--overwrite", action="store_true", help="replace existing .mlpackage files")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything the real run checks (sizes, enumerated shapes, file names, the output folder, "
                             "existing files) and list the files that would be written; convert nothing")
    return parser


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[dict]:
    if args.shape is not None:
        if args.batch is not None:
            parser.error("--batch goes with --size; --shape already contains the batch")
        shapes = [tuple(s) for s in args.shape]
    else:
        batch = 1 if args.batch is None else args.batch
        shapes = [(batch, 3, h, w) for h, w in (args.size or _DEFAULT_SHAPES)]
    for s in shapes:
        if min(s) <= 0:
            parser.error(f"shape sizes must be positive, got {s}")
    modes: list[str] = []
    for mode in args.attention_mode or (["global"] if args.enumerated_sizes else ["both"]):
        for m in ATTENTION_MODES if mode == "both" else (mode,):
            if m not in modes:
                modes.append(m)
    split_head = not args.no_split_head
    jobs = []
    target = args.deployment_target
    if args.enumerated_sizes:
        from .shapes import check_enumerated_shapes

        if len(set(shapes)) < 2:
            parser.error(f"--enumerated-sizes needs at least two different --size/--shape, got {shapes}")
        try:  # Core ML's limit (128), duplicates: what the conversion checks, before it
            check_enumerated_shapes(shapes, shapes[0])
        except ValueError as err:
            parser.error(f"--enumerated-sizes: {err}")
        if args.pe_type not in (PEType.LePE_FUSED, PEType.NONE):
            parser.error(f"--enumerated-sizes needs --pe-type LePE_FUSED or NONE (the others are sized for one resolution), got {args.pe_type.name}")
        if "local" in modes:
            parser.error("--enumerated-sizes works with global attention only (--attention-mode global)")
        for mode in modes:
            cfg = {"base_arch": args.arch, "attention_mode": mode, "pe_type": args.pe_type, "split_head": split_head}
            jobs.append(
                dict(
                    base_arch=args.arch, shape=shapes[0], attention_mode=mode, pe_type=args.pe_type,
                    split_head=split_head, num_classes=args.num_classes, image_input=args.image_input,
                    enumerated_shapes=shapes, minimum_deployment_target=target,
                    path=Path(args.output_dir) / moat_filename(cfg, shapes[0], shapes, target),
                )
            )
        return jobs
    for mode in modes:  # the seed's loop order: attention mode, then shape
        for s in shapes:
            cfg = {"base_arch": args.arch, "attention_mode": mode, "pe_type": args.pe_type, "split_head": split_head}
            jobs.append(
                dict(
                    base_arch=args.arch,
                    shape=s,
                    attention_mode=mode,
                    pe_type=args.pe_type,
                    split_head=split_head,
                    local_window_size=args.local_window if mode == "local" else None,
                    num_classes=args.num_classes,
                    image_input=args.image_input,
                    minimum_deployment_target=target,
                    path=Path(args.output_dir) / moat_filename(cfg, s, None, target),
                )
            )
    return jobs


def _validate(jobs: list[dict], parser: argparse.ArgumentParser) -> None:
    """Check every job's model arguments with ``moat_config`` (cheap: no model is built),
    so that a bad size or window is reported before the first, slow conversion."""
    from ..moat import moat_config

    for job in jobs:
        for shape in job.get("enumerated_shapes") or [job["shape"]]:  # every size of a flexible program
            try:
                moat_config(
                    shape=shape, base_arch=job["base_arch"], attention_mode=job["attention_mode"],
                    split_head=job["split_head"], local_window_size=job.get("local_window_size"),
                    pe_type=job["pe_type"], num_classes=job["num_classes"],
                )
            except (TypeError, ValueError) as err:
                b, _, h, w = shape
                parser.error(f"{job['base_arch']}, {job['attention_mode']} attention, batch {b}, {h}x{w}: {err}")


def _check_targets(jobs: list[dict], args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Every file the run would write: a writable --output-dir, a name the file system takes,
    no existing file unless --overwrite (all listed)."""
    try:
        for job in jobs:
            _check_target(job["path"], overwrite=True)
    except OSError as err:
        parser.error(f"--output-dir: {err.strerror}: {err.filename}" if err.strerror else str(err))
    except ValueError as err:  # a file name too long
        parser.error(str(err))
    existing = [str(j["path"]) for j in jobs if j["path"].exists()]
    if existing and not args.overwrite:
        parser.error(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m ane_vit.export [options]``; returns the exit status.

    Usage errors (unknown option, a size or window that a job's model does not accept, more
    than 128 or repeated enumerated shapes, a file name too long for the file system, an
    unwritable folder, an existing file without ``--overwrite``) exit with status 2 before
    anything is converted; ``--dry-run`` checks exactly the same and lists the files. The
    output folder is created only when the first package is saved.
    """
    os.environ.setdefault("TQDM_DISABLE", "1")
    quiet_native_library_warnings()  # before coremltools is imported: see ane_vit.coreml_log
    from ..moat import ARCHITECTURES

    parser = _build_parser(sorted(ARCHITECTURES))
    args = parser.parse_args(argv)
    jobs = _plan(args, parser)
    _validate(jobs, parser)
    _check_targets(jobs, args, parser)
    if args.dry_run:
        for job in jobs:
            print(job["path"])
        return 0
    import_coremltools()  # a Ctrl-C during the import stops the run (see ane_vit.coreml_log)
    for i, job in enumerate(jobs, 1):
        job.pop("path")
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            saved = save.export_moat(**job, output_dir=args.output_dir, overwrite=args.overwrite)
        except ValueError as err:  # e.g. a size or window build_model does not accept
            parser.error(str(err))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start  # CPU: robust on a busy machine
        print(f"[{i}/{len(jobs)}] {saved}  {wall:.1f} s ({cpu:.1f} s CPU)  {package_nbytes(saved) / 1e6:.2f} MB", flush=True)
    return 0

"""The digits command line: ``python -m ane_vit.digits train``, ``evaluate``, ``finetune``, ``crossval``, ``threshold``.

``train`` writes the weights and the training record (by default into ``ane_vit/data/``,
the files that ship); ``evaluate`` prints the accuracy of every stage and writes
``results/digits.json``; ``finetune`` compresses while fine-tuning and evaluates the programs
(``results/digits_finetune.json``); ``crossval`` trains one model per fold over all 1,797
digits (``results/digits_crossval.json``); ``threshold`` measures what compressing the small
constants does (``results/digits_threshold.json``). None replaces an existing file (or a program in
``--work-dir``) without ``--overwrite``. Every path and value is checked before the slow work
starts; each file is written whole or not at all (a temporary file renamed into place,
programs through ``ane_vit.export.save_program``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ..coreml_log import import_coremltools, quiet_native_library_warnings
from .model import RECORD_FILE, WEIGHTS_FILE, weights_path


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ane_vit.digits", description="Train and evaluate the digits micro-moat.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the model; writes the weights and a JSON training record")
    tr.add_argument("--epochs", type=int, default=12, help="epochs (default: 12)")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    tr.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    tr.add_argument("--output-dir", default=None, metavar="DIR",
                    help=f"folder for {WEIGHTS_FILE} and {RECORD_FILE} (default: ane_vit/data, the shipped files)")
    tr.add_argument("--overwrite", action="store_true", help="replace existing files")
    ev = sub.add_parser("evaluate", help="accuracy at every stage; writes results/digits.json")
    ev.add_argument("--output", default="results/digits.json", metavar="FILE", help="JSON file (default: results/digits.json)")
    ev.add_argument("--weights", default=None, metavar="FILE", help="reference state dict (default: the shipped weights)")
    ev.add_argument("--work-dir", default=None, metavar="DIR",
                    help="keep the converted and compressed programs in DIR (default: a temporary folder, deleted)")
    ev.add_argument("--limit", type=int, default=None, metavar="N",
                    help="evaluate on a stratified subset of N test images, 10 to 360 (default: all 360)")
    ev.add_argument("--no-compressed", action="store_true", help="skip the compressed programs")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing output file and programs in --work-dir")
    ft = sub.add_parser("finetune", help="prune / palettize while fine-tuning, then convert, compress and evaluate; "
                                         "writes results/digits_finetune.json")
    ft.add_argument("--output", default="results/digits_finetune.json", metavar="FILE",
                    help="JSON file (default: results/digits_finetune.json)")
    ft.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs per method (default: 6)")
    ft.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default: 5e-4)")
    ft.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    ft.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    ft.add_argument("--methods", default=None, metavar="NAME[,NAME]",
                    help="comma-separated subset of: " + ", ".join(_finetune_names()) + " (default: all)")
    ft.add_argument("--limit", type=int, default=None, metavar="N",
                    help="evaluate the programs on a stratified subset of N test images (default: all)")
    ft.add_argument("--work-dir", default=None, metavar="DIR", help="keep the programs there (default: a temporary folder)")
    ft.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    cv = sub.add_parser("crossval", help="k-fold cross-validated accuracy of the training recipe over all 1,797 digits; "
                                         "writes results/digits_crossval.json")
    cv.add_argument("--output", default="results/digits_crossval.json", metavar="FILE",
                    help="JSON file (default: results/digits_crossval.json)")
    cv.add_argument("--folds", type=int, default=5, help="number of folds, 2..20 (default: 5)")
    cv.add_argument("--epochs", type=int, default=12, help="epochs per fold (default: 12, as the shipped model)")
    cv.add_argument("--seed", type=int, default=0, help="split seed; fold k trains with seed + k (default: 0)")
    cv.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    cv.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    th = sub.add_parser("threshold", help="size and accuracy when coremltools' 2,048-element threshold is lowered, "
                                          "and which small constants tolerate compression; writes results/digits_threshold.json")
    th.add_argument("--output", default="results/digits_threshold.json", metavar="FILE",
                    help="JSON file (default: results/digits_threshold.json)")
    th.add_argument("--limit", type=int, default=None, metavar="N",
                    help="evaluate the programs on a stratified subset of N test images (default: all)")
    th.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def _path(text: str) -> Path:
    """A path as the user meant it: ``~`` expanded once (a quoted ``'~/x'`` reaches us literally)."""
    return Path(os.path.expanduser(text))


def _check_file(path: Path, flag: str, overwrite: bool, parser: argparse.ArgumentParser) -> None:
    """Fail before the work: ``path`` must be a file we may write (or replace with ``--overwrite``)."""
    from ..export.paths import _check_target

    if path.is_dir():
        parser.error(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        parser.error(f"{path} already exists; pass --overwrite to replace it")
    try:
        _check_target(path, overwrite=True)
    except OSError as err:
        parser.error(f"{flag} {path}: {err.strerror}")
    except ValueError as err:  # a file name longer than the file system takes
        parser.error(f"{flag}: {err}")


def _os_message(err: OSError) -> str:
    """``[Errno 20] what: 'file'`` -> ``what: file``."""
    return f"{err.strerror}: {err.filename}" if err.strerror and err.filename else str(err)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place:
    an interrupted write leaves the old file (or none), never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise



def _finetune_names() -> list[str]:
    from .finetune import FINETUNE_METHODS

    return list(FINETUNE_METHODS)


def _write_json(path: Path, result: dict) -> None:
    _write_atomically(path, (json.dumps(result, indent=2) + "\n").encode())
    print(path)


def _finetune(args, parser) -> int:
    output = _path(args.output)
    _check_file(output, "--output", args.overwrite, parser)
    from .finetune import FINETUNE_METHODS, finetune_rows

    names = list(FINETUNE_METHODS) if args.methods is None else [n.strip() for n in args.methods.split(",")]
    unknown = [n for n in names if n not in FINETUNE_METHODS]
    if unknown or not names:
        parser.error(f"--methods takes names from {list(FINETUNE_METHODS)}, got {args.methods!r}")
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        result = finetune_rows({n: FINETUNE_METHODS[n] for n in names}, epochs=args.epochs, lr=args.lr, seed=args.seed,
                               threads=args.threads, limit=args.limit, work_dir=args.work_dir, log=print)
    except ValueError as err:
        parser.error(str(err))
    for r in result["rows"]:
        print(f"{r['stage']:40s} {r['accuracy']:8.2%}  {r['bytes'] / 1e3:7.1f} kB  {r['ratio_to_fp16']:.2f}x")
    _write_json(output, result)
    return 0


def _crossval(args, parser) -> int:
    output = _path(args.output)
    _check_file(output, "--output", args.overwrite, parser)
    from .crossval import crossval

    try:
        result = crossval(folds=args.folds, epochs=args.epochs, seed=args.seed, threads=args.threads, log=print)
    except ValueError as err:
        parser.error(str(err))
    low, high = result["wilson_95"]
    print(f"pooled: {result['correct']}/{result['n']} = {result['accuracy']:.4f} (95 % Wilson {low:.4f}..{high:.4f})")
    _write_json(output, result)
    return 0


def _threshold(args, parser) -> int:
    output = _path(args.output)
    _check_file(output, "--output", args.overwrite, parser)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from .threshold import threshold_study

    try:
        result = threshold_study(limit=args.limit, log=print)
    except ValueError as err:
        parser.error(str(err))
    _write_json(output, result)
    return 0


def _train(args, parser) -> int:
    folder = _path(args.output_dir) if args.output_dir else weights_path().parent
    if folder.exists() and not folder.is_dir():
        parser.error(f"--output-dir {folder} is a file, not a folder; choose a folder for {WEIGHTS_FILE} and {RECORD_FILE}")
    targets = [folder / WEIGHTS_FILE, folder / RECORD_FILE]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        parser.error(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose another --output-dir")
    for target in targets:
        _check_file(target, "--output-dir", True, parser)
    from .train import train

    try:
        state, record = train(epochs=args.epochs, seed=args.seed, threads=args.threads, progress=True, log=print)
    except (ValueError, FloatingPointError) as err:
        parser.error(str(err))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _write_atomically(targets[0], buffer.getvalue())
    _write_atomically(targets[1], (json.dumps(record, indent=2) + "\n").encode())
    print(f"{targets[0]}  {targets[0].stat().st_size / 1e6:.2f} MB  test accuracy {record['test_accuracy']:.4f}")
    print(f"{targets[1]}  {record['wall_seconds']} s ({record['cpu_seconds']} s CPU), {record['epochs']} epochs, seed {record['seed']}")
    return 0


def _evaluate(args, parser) -> int:
    output = _path(args.output)
    _check_file(output, "--output", args.overwrite, parser)
    work_dir = None if args.work_dir is None else _path(args.work_dir)
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' conversion progress bars
    from .data import load_data
    from .evaluate import check_limit, check_work_dir, evaluate, format_table
    from .model import load_state

    if work_dir is not None:
        try:
            check_work_dir(work_dir, compressed=not args.no_compressed, overwrite=args.overwrite)
        except OSError as err:
            parser.error(f"--work-dir: {_os_message(err)}")
    try:
        load_state(args.weights)
    except (ValueError, OSError) as err:
        parser.error(f"--weights: {_os_message(err) if isinstance(err, OSError) else err}")
    if args.limit is not None:
        try:
            check_limit(args.limit, len(load_data()[3]), "--limit")
        except ValueError as err:
            parser.error(str(err))
    import_coremltools()  # a Ctrl-C during the import stops the run (see ane_vit.coreml_log)
    try:
        results = evaluate(weights=args.weights, work_dir=work_dir, limit=args.limit, compressed=not args.no_compressed,
                           log=print, overwrite=args.overwrite)
    except (ValueError, OSError) as err:  # checked above: only what changed since (e.g. a file appeared)
        parser.error(_os_message(err) if isinstance(err, OSError) else str(err))
    print(format_table(results))
    _write_atomically(output, (json.dumps(results, indent=2) + "\n").encode())
    print(output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m ane_vit.digits {train,evaluate,finetune,crossval,threshold} [options]``; returns the exit status.

    Usage errors exit with status 2 before any training or conversion: an existing file
    without ``--overwrite``, a folder flag that names a file, an output that cannot be
    written, a ``--limit`` out of range, weights that are not the digits model's.
    """
    quiet_native_library_warnings()  # before coremltools is imported: see ane_vit.coreml_log
    parser = _build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": _train, "evaluate": _evaluate, "finetune": _finetune, "crossval": _crossval, "threshold": _threshold}
    return handlers[args.command](args, parser)

"""The digits command line: ``python -m ane_vit.digits train`` and ``... evaluate``.

``train`` writes the weights and the training record (by default into ``ane_vit/data/``,
the files that ship); ``evaluate`` prints the accuracy of every stage and writes
``results/digits.json``. Neither replaces an existing file without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

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
                    help="where the converted and compressed programs are saved (default: a temporary folder)")
    ev.add_argument("--limit", type=int, default=None, metavar="N",
                    help="evaluate the interpreted programs on a stratified subset of N test images (default: all)")
    ev.add_argument("--no-compressed", action="store_true", help="skip the compressed programs")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def _train(args, parser) -> int:
    folder = Path(args.output_dir) if args.output_dir else weights_path().parent
    targets = [folder / WEIGHTS_FILE, folder / RECORD_FILE]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        parser.error(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    from .train import train

    try:
        state, record = train(epochs=args.epochs, seed=args.seed, threads=args.threads, progress=True, log=print)
    except ValueError as err:
        parser.error(str(err))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, targets[0])
    targets[1].write_text(json.dumps(record, indent=2) + "\n")
    print(f"{targets[0]}  {targets[0].stat().st_size / 1e6:.2f} MB  test accuracy {record['test_accuracy']:.4f}")
    print(f"{targets[1]}  {record['wall_seconds']} s ({record['cpu_seconds']} s CPU), {record['epochs']} epochs, seed {record['seed']}")
    return 0


def _evaluate(args, parser) -> int:
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        parser.error(f"{output} already exists; pass --overwrite to replace it")
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' conversion progress bars
    from .evaluate import evaluate, format_table

    try:
        results = evaluate(weights=args.weights, work_dir=args.work_dir, limit=args.limit,
                           compressed=not args.no_compressed, log=print)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print(format_table(results))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m ane_vit.digits {train,evaluate} [options]``; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    return _train(args, parser) if args.command == "train" else _evaluate(args, parser)

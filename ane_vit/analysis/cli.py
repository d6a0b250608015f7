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
    """``python -m ane_vit.analysis model.mlpackage [--json] [--top N]``, or
    ``python -m ane_vit.analysis --rules --arch NAME [...]`` (Apple's Neural Engine rules)."""
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.analysis",
        description="Report what a Core ML ML Program contains: ops, shapes, bytes (dense, and padded to "
        "64-byte rows as two bounds: the lower pads only the program's outputs, the upper every op output), "
        "weights, FLOPs, layout ops (split into those that move the last, width, axis and those that keep "
        "it) and ANE-readiness findings. Sizes in MB = 10^6 bytes. Facts about the program, not latency. "
        "With --rules: check a PyTorch model of the registry against Apple's Neural Engine rules on its "
        "torch.export graph.",
    )
    parser.add_argument("model", nargs="?", help="path to a saved .mlpackage (ML Program)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="largest op outputs to list (default 10)")
    _add_rules_arguments(parser)
    args = parser.parse_args(argv)
    quiet_native_library_warnings()  # before coremltools is imported: see ane_vit.coreml_log
    if args.rules or args.survey:
        return _rules_main(args, parser)
    if args.model is None:
        parser.error("expected a saved .mlpackage to analyse (or --rules --arch NAME to check a PyTorch model)")
    if args.top < 0:
        parser.error(f"--top must be >= 0, got {args.top}")
    try:
        report = analyze(args.model)
    except (FileNotFoundError, ValueError) as err:  # ane_vit.interpret.ProgramLoadError names the file
        parser.exit(2, f"error: {err}\n")
    check_interrupted()  # a swallowed Ctrl-C: stop before printing a report
    sys.stdout.write((report.to_json() if args.json else report.table(top=args.top)) + "\n")
    return 0



# --------------------------------------------------------------------------- --rules

_RULES_DTYPES = ("float16", "float32")


def _add_rules_arguments(parser: argparse.ArgumentParser) -> None:
    from ..attention import PEType
    from ..deit import DEIT_CONFIGS
    from ..moat import ARCHITECTURES, ATTENTION_MODES

    group = parser.add_argument_group("Apple's Neural Engine rules on a PyTorch model (ane_vit.analysis.check_rules)")
    group.add_argument("--rules", action="store_true", help="check the model built from --arch (random weights, seed 0) instead of a saved program")
    group.add_argument("--arch", choices=[*ARCHITECTURES, *DEIT_CONFIGS], metavar="NAME",
                       help=f"a MOAT ({', '.join(ARCHITECTURES)}) or DeiT ({', '.join(DEIT_CONFIGS)})")
    group.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                       help="input height and width (default: 224 224 for DeiT, 64 64 for micro-moat, 256 256 otherwise)")
    group.add_argument("--attention-mode", choices=ATTENTION_MODES, default="global", help="MOAT attention (default: global)")
    group.add_argument("--pe-type", choices=[m.name for m in PEType], default="SINGLE_HEAD_RPE", metavar="PE",
                       help="MOAT position embedding (default: SINGLE_HEAD_RPE, as python -m ane_vit.export)")
    group.add_argument("--num-classes", type=int, default=None, metavar="N", help="with a classification head of N classes")
    group.add_argument("--reference", action="store_true", help="check the plain reference twin (ane_vit.reference) instead")
    group.add_argument("--dtype", choices=_RULES_DTYPES, default="float16", help="precision the model runs at (default: float16)")
    group.add_argument("--survey", metavar="OUT.json", default=None,
                       help="check every model the book ships (ANE and reference) and write the findings table "
                            "(results/rules_findings.json), keeping the file's recorded original rows")
    group.add_argument("--original-checkout", metavar="DIR", default=None,
                       help="with --survey: record the original's rows anew from a git checkout of "
                            "apple/ml-vision-transformers-ane at c42abad outside this repository")
    group.add_argument("--overwrite", action="store_true", help="with --survey: replace an existing file")


def _rules_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    if args.model is not None:
        parser.error(f"--rules checks a PyTorch model built from --arch, not a saved program; got {args.model!r}")
    torch.set_num_threads(1)
    if args.survey is not None:
        from .rules_survey import write_rules_survey

        try:
            path = write_rules_survey(args.survey, overwrite=args.overwrite, original_checkout=args.original_checkout)
        except (FileExistsError, ValueError) as err:
            parser.exit(2, f"error: {err}\n")
        sys.stdout.write(f"wrote {path}\n")
        return 0
    if args.arch is None:
        parser.error("--rules needs --arch NAME (a MOAT or DeiT of the registry)")
    from .rules import check_rules

    try:
        model, x = _registry_model(args)
    except (TypeError, ValueError) as err:
        parser.error(f"{args.arch}: {err}")
    report = check_rules(model, x, dtype=args.dtype, name=_model_label(args, x))
    sys.stdout.write((report.to_json() if args.json else report.table()) + "\n")
    return 0


def _default_size(arch: str) -> tuple[int, int]:
    from ..deit import DEIT_CONFIGS

    return (224, 224) if arch in DEIT_CONFIGS else (64, 64) if arch == "micro-moat" else (256, 256)


def _model_label(args: argparse.Namespace, x) -> str:
    from ..deit import DEIT_CONFIGS

    h, w = x.shape[-2:]
    kind = "reference" if args.reference else "ANE"
    if args.arch in DEIT_CONFIGS:
        return f"{args.arch} {kind} {h}x{w}"
    return f"{args.arch} {kind} {h}x{w} {args.attention_mode} {args.pe_type}"


def _registry_model(args: argparse.Namespace):
    """The model ``--arch`` names, with random trained-looking weights (seed 0), and its input."""
    import torch

    from ..deit import DEIT_CONFIGS, build_deit
    from ..moat import build_model
    from ..reference.deit import ReferenceDeiT
    from ..reference.moat import build_reference_model
    from ..testing import randomize_

    h, w = args.size or _default_size(args.arch)
    if args.arch in DEIT_CONFIGS:
        config = DEIT_CONFIGS[args.arch]
        classes = args.num_classes if args.num_classes is not None else 1000
        model = ReferenceDeiT(config, image_size=(h, w), num_classes=classes) if args.reference else \
            build_deit(config, image_size=(h, w), num_classes=classes)
    else:
        build = build_reference_model if args.reference else build_model
        _, model = build((1, 3, h, w), base_arch=args.arch, attention_mode=args.attention_mode,
                         pe_type=args.pe_type, num_classes=args.num_classes)
    torch.manual_seed(0)
    randomize_(model, seed=0)
    return model.eval(), torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))

"""The latency estimate's command line, ``python -m ane_vit.latency`` (run by ``__main__.py``).

* ``estimate MODEL.mlpackage [--chip A14] [--json]``: the ESTIMATE of one saved program;
* ``fit [--overwrite]``: refit from ``results/latency_estimate/calibration.json``, write the validation
  report ``results/latency_estimate/model.json`` and the coefficients ``ane_vit/latency/calibrated.py``;
* ``apply [--overwrite]``: convert this book's models (ANE and reference MOATs, DeiT-Tiny) and
  estimate them, with the programs of ``results/latency_estimate/external_programs.json``:
  ``results/latency_estimate/estimates.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..coreml_log import quiet_native_library_warnings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ane_vit.latency",
        description="ESTIMATED Neural Engine latency of a converted program, from a model calibrated on published "
        "measurements (appendix A2). Never a measurement.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("estimate", help="estimate one saved .mlpackage")
    e.add_argument("model", help="path to a saved .mlpackage (ML Program)")
    e.add_argument("--chip", default="A14", help="chip to estimate for (default A14, the only one calibrated)")
    e.add_argument("--json", action="store_true", help="print the estimate as JSON")
    f = sub.add_parser("fit", help="refit and validate the model; write results/latency_estimate/model.json and calibrated.py")
    f.add_argument("--calibration", help="calibration file (default results/latency_estimate/calibration.json)")
    f.add_argument("--form", default=None, help="model form (default: ane_vit.latency.DEFAULT_FORM)")
    f.add_argument("--output", help="validation report (default results/latency_estimate/model.json)")
    f.add_argument("--overwrite", action="store_true", help="replace the committed report and coefficients (refused without it)")
    a = sub.add_parser("apply", help="estimate this book's models; write results/latency_estimate/estimates.json")
    a.add_argument("--external", help="programs converted outside (default results/latency_estimate/external_programs.json, if present)")
    a.add_argument("--output", help="estimates file (default results/latency_estimate/estimates.json)")
    a.add_argument("--overwrite", action="store_true", help="replace the committed estimates (refused without it)")
    a.add_argument("--programs-cache", metavar="JSON",
                   help="reuse the converted programs' features from this file if it exists, else write them there "
                   "(re-estimating after a refit then needs no conversion)")
    return p


def _refuse_existing(parser: argparse.ArgumentParser, path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        parser.error(f"{path} exists; pass --overwrite to replace it")


def _our_programs() -> list[dict]:
    """Convert the benchmark's models (both implementations) and the original's configurations in ours."""
    from ..analysis import analyze
    from ..bench.original import original_specs
    from ..bench.specs import default_specs
    from ..export import to_mlprogram
    from .features import op_groups, readiness_flags

    specs = {s.name: s for s in default_specs() + original_specs()}
    rows = []
    for name, spec in specs.items():
        module, example, _ = spec.build()
        mlmodel = to_mlprogram(module, example)
        report = analyze(mlmodel)
        s = report.summary()
        rows.append({
            "name": name, "implementation": spec.implementation, "family": spec.family, "arch": spec.arch,
            "attention_mode": spec.attention_mode, "pe_type": spec.pe_type, "channel_buffer_align": spec.channel_buffer_align,
            "input_shape": list(example.shape),
            "summary": {k: s[k] for k in ("ops", "flops", "weight_bytes", "activation_bytes_padded", "layout_ops",
                                           "layout_bytes_padded", "max_rank")},
            "findings_by_rule": s["findings_by_rule"], "flags": readiness_flags(report), "op_groups": op_groups(mlmodel),
        })
        print(f"{name}: {s['ops']} ops", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``python -m ane_vit.latency --help``)."""
    parser = _parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    quiet_native_library_warnings()  # before coremltools is imported: see ane_vit.coreml_log
    from . import report as rep

    if args.command == "estimate":
        from .estimate import estimate

        try:
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                result = estimate(args.model, chip=args.chip, warn=False)
        except (FileNotFoundError, ValueError, TypeError) as err:
            parser.exit(2, f"error: {err}\n")
        sys.stdout.write((json.dumps(result.to_dict(), indent=1) if args.json else str(result)) + "\n")
        return 0
    if args.command == "fit":
        from .model import DEFAULT_FORM, FORMS

        form = args.form or DEFAULT_FORM
        if form not in FORMS:
            parser.error(f"--form must be one of {sorted(FORMS)}, got {form!r}")
        out = Path(args.output) if args.output else rep.results_path(rep.MODEL_FILE)
        _refuse_existing(parser, out, args.overwrite)
        try:
            data = rep.load_calibration(args.calibration)
        except (FileNotFoundError, ValueError) as err:
            parser.exit(2, f"error: {err}\n")
        report = rep.validation_report(data, form=form)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        if args.output is None:  # the committed coefficients follow the committed report only
            rep.write_calibrated_module(report)
        m, c = report["model"], report["coverage"]
        print(f"wrote {out}: {form}, LOFO mean |error| {m['notes']['lofo_mean_abs_rel_error']:.1%}, "
              f"80 % interval x/÷ {2.718281828 ** m['halfwidth']:.2f}, nested coverage {c['nested']:.0%}")
        return 0
    # apply
    from .estimate import calibrated_model

    out = Path(args.output) if args.output else rep.results_path(rep.ESTIMATES_FILE)
    _refuse_existing(parser, out, args.overwrite)
    ext_path = Path(args.external) if args.external else rep.results_path(rep.EXTERNAL_FILE)
    external = rep.load_json(ext_path) if (args.external or ext_path.exists()) else None
    cache = Path(args.programs_cache) if args.programs_cache else None
    if cache is not None and cache.exists():
        ours = rep.load_json(cache)["programs"]
    else:
        import torch

        torch.set_num_threads(1)
        ours = _our_programs()
        if cache is not None:
            cache.write_text(json.dumps({"programs": ours}) + "\n", encoding="utf-8")
    doc = rep.apply_estimates(calibrated_model("A14"), ours, external)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(doc['rows'])} estimates")
    return 0

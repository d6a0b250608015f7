"""Calibration data of the latency estimate (appendix A2): program features of the published models.

Not part of the default install or the tests: it needs timm (which needs torchvision) in a venv
of its own, because the registry's torchvision does not load beside the book's torch 2.13.0+cpu:

    python3 -m venv /work/venv-timm
    /work/venv-timm/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/venv-timm/bin/pip install timm coremltools==9.0 numpy==2.3.5 scikit-learn matplotlib
    /work/venv-timm/bin/pip install -e . --no-deps
    nice -n 10 /work/venv-timm/bin/python .ci/calibrate_latency.py            # ~40 models, 10-50 s each

For every row of results/published_latency.csv whose ``use`` is ``calibration`` or ``out_of_chip``
it builds the model with timm (``pretrained=False``), gives it random trained-looking weights
(``ane_vit.testing.randomize_``), reparameterises it (``timm.utils.reparameterize_model``: MobileOne,
FastViT and RepViT have training-time branches that inference folds away), converts it as our
exports are converted (``ane_vit.export.to_mlprogram``: float16 ML Program, iOS16, fixed shape
1x3xSxS, eval) and records ``ane_vit.latency.op_groups`` (per-op FLOPs and padded bytes) and the
``ane_vit.analysis`` summary. Each (model, size) is converted once; results are cached in
--cache so an interrupted run resumes. Output: results/latency_estimate/calibration.json.

With ``--external`` it converts instead the MOAT programs that are not ours, for appendix A2's
application (their code is read from checkouts outside this repository and never committed):

    git -C <mirror of apple/ml-vision-transformers-ane> archive c42abada32e96686f4d0bb37acb79ef7d99602ed | tar -x -C /tmp/orig
    git -C <mirror of RooKichenn/pytorch-MOAT> archive 4ceac68061c61c875ea669f938b76cecac222f8b | tar -x -C /tmp/thirdparty
    nice -n 10 /work/venv-timm/bin/python .ci/calibrate_latency.py --external --original /tmp/orig --third-party /tmp/thirdparty

* the original's four recorded configurations (results/original_programs.json), built and
  weighted as that file's provenance says (its own builder, split_head=True,
  channel_buffer_align=False, weights of ``randomize_``d ``ane_vit.moat.build_model`` loaded with
  ``ane_vit.port.to_seed_state_dict``), at 256x256;
* the third-party MOAT the original's chart compares with (RooKichenn/pytorch-MOAT):
  tiny_moat_1 at 256x256, global attention and 8x8 windows (``use_window=True``: 6-D window
  partition), ``randomize_``d.

Output: results/latency_estimate/external_programs.json (op groups, analysis summary and findings).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(timm_name: str, size: int):
    import timm
    import torch
    from timm.utils import reparameterize_model

    from ane_vit.testing import randomize_

    model = timm.create_model(timm_name, pretrained=False)
    randomize_(model, seed=0)
    model.eval()
    model = reparameterize_model(model)
    params = sum(p.numel() for p in model.parameters())
    return model.eval(), params, torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def convert_one(timm_name: str, size: int) -> dict:
    from ane_vit.analysis import analyze
    from ane_vit.export import to_mlprogram
    from ane_vit.latency import op_groups, summary_features

    model, params, x = build(timm_name, size)
    mlmodel = to_mlprogram(model, x)
    report = analyze(mlmodel)
    groups = op_groups(mlmodel)
    summary = report.summary()
    check = summary_features(groups)
    if int(check["flops"]) != summary["flops"] or int(check["ops"]) != summary["ops"]:
        raise RuntimeError(f"{timm_name}: op groups disagree with the analysis ({check} vs {summary})")
    return {
        "timm_name": timm_name,
        "input_shape": [1, 3, size, size],
        "parameters": params,
        "summary": {k: summary[k] for k in ("ops", "flops", "weight_bytes", "activation_bytes_padded",
                                             "activation_bytes_dense", "layout_ops", "layout_bytes_padded", "max_rank")},
        "findings_by_rule": summary["findings_by_rule"],
        "histogram": dict(report.histogram().most_common()),
        "op_groups": groups,
    }


ORIGINAL_COMMIT = "c42abada32e96686f4d0bb37acb79ef7d99602ed"
THIRD_PARTY_COMMIT = "4ceac68061c61c875ea669f938b76cecac222f8b"
# (name, arch, attention_mode, pe_type, channel_buffer_align): results/original_programs.json's rows
ORIGINAL_CONFIGS = [
    ("original_tiny-moat-0_256_global_LePE_ADD", "tiny-moat-0", "global", "LePE_ADD"),
    ("original_tiny-moat-0_256_global_SINGLE_HEAD_RPE", "tiny-moat-0", "global", "SINGLE_HEAD_RPE"),
    ("original_tiny-moat-0_256_local_SINGLE_HEAD_RPE", "tiny-moat-0", "local", "SINGLE_HEAD_RPE"),
    ("original_tiny-moat-1_256_global_LePE_ADD_unaligned", "tiny-moat-1", "global", "LePE_ADD"),
]


def _program_record(mlmodel, params: int, shape) -> dict:
    from ane_vit.analysis import analyze
    from ane_vit.latency import op_groups, readiness_flags

    report = analyze(mlmodel)
    summary = report.summary()
    return {
        "flags": readiness_flags(report),
        "input_shape": list(shape), "parameters": params,
        "summary": {k: summary[k] for k in ("ops", "flops", "weight_bytes", "activation_bytes_padded",
                                             "activation_bytes_dense", "layout_ops", "layout_bytes_padded", "max_rank")},
        "findings_by_rule": summary["findings_by_rule"],
        "findings_by_severity": summary["findings_by_severity"],
        "histogram": dict(report.histogram().most_common()),
        "op_groups": op_groups(mlmodel),
    }


def _cached(cache: Path, name: str, make) -> dict:
    """``make()`` once per program name: kept in ``cache`` so an interrupted run resumes."""
    path = cache / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    rec = make()
    path.write_text(json.dumps(rec))
    return rec


def convert_original(checkout: str, cache: Path) -> dict:
    import torch

    from ane_vit.attention import PEType
    from ane_vit.export import to_mlprogram
    from ane_vit.moat import build_model
    from ane_vit.port.seed import to_seed_state_dict
    from ane_vit.testing import randomize_

    sys.path.insert(0, checkout)
    from vision_transformers.attention_utils import (
        PEType as OrigPE,  # the original's code, from the checkout
    )
    from vision_transformers.model import _build_model

    out = {}
    shape = (1, 3, 256, 256)
    for name, arch, mode, pe in ORIGINAL_CONFIGS:
        window = [8, 8] if mode == "local" else None

        def make(arch=arch, mode=mode, pe=pe, window=window):
            _, ours = build_model(shape=shape, base_arch=arch, attention_mode=mode, pe_type=PEType[pe], split_head=True,
                                  channel_buffer_align=False, local_window_size=window)
            randomize_(ours, seed=0)
            _, orig = _build_model(base_arch=arch, shape=shape, split_head=True, pe_type=getattr(OrigPE, pe),
                                   channel_buffer_align=False, attention_mode=mode, local_window_size=window)
            orig.load_state_dict(to_seed_state_dict(ours.eval()))
            x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
            rec = _program_record(to_mlprogram(orig.eval(), x), sum(p.numel() for p in orig.parameters()), shape)
            rec.update(implementation="original", arch=arch, attention_mode=mode, pe_type=pe)
            return rec

        out[name] = rec = _cached(cache, name, make)
        print(f"{name}: {rec['summary']['ops']} ops", flush=True)
    return out


def convert_third_party(checkout: str, cache: Path) -> dict:
    import importlib

    import torch

    from ane_vit.export import to_mlprogram
    from ane_vit.testing import randomize_

    # timm 1.0 renamed the module the third-party code imports its MBConv parts from (the
    # classes are the same); an alias lets the unmodified code import
    sys.modules.setdefault("timm.models.efficientnet_blocks", importlib.import_module("timm.models._efficientnet_blocks"))
    sys.path.insert(0, checkout)
    from classification.moat import tiny_moat_1  # the third-party code, from the checkout

    out = {}
    shape = (1, 3, 256, 256)
    for mode, kw in (("global", {"use_window": False}), ("local", {"use_window": True, "window_size": (8, 8)})):
        def make(kw=kw, mode=mode):
            model = tiny_moat_1(img_size=(256, 256), num_classes=1000, **kw)
            randomize_(model, seed=0)
            x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
            try:
                rec = _program_record(to_mlprogram(model.eval(), x), sum(p.numel() for p in model.parameters()), shape)
            except Exception as err:  # record why a configuration does not convert
                rec = {"input_shape": list(shape), "error": f"{type(err).__name__}: {err}"}
            rec.update(implementation="third-party", arch="tiny-moat-1", attention_mode=mode,
                       pe_type="RPE (gathered table)", options=repr(kw))
            return rec

        name = f"third-party_tiny-moat-1_256_{mode}"
        out[name] = rec = _cached(cache, name, make)
        print(f"{name}: {rec.get('summary', {}).get('ops', rec.get('error'))}", flush=True)
    return out


def external(args) -> int:
    from ane_vit._versions import dist_version

    programs = {}
    cache = Path(args.cache + "_external")
    cache.mkdir(parents=True, exist_ok=True)
    if args.original:
        programs.update(convert_original(args.original, cache))
    if args.third_party:
        programs.update(convert_third_party(args.third_party, cache))
    doc = {
        "provenance": {
            "what": "Program features of MOAT programs that are not ours, converted here for appendix A2 (latency ESTIMATES "
                    "are made from them by python -m ane_vit.latency apply). Program facts, not latency.",
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "nice -n 10 /work/venv-timm/bin/python .ci/calibrate_latency.py --external --original <checkout> --third-party <checkout>",
            "machine": {"system": platform.system(), "machine": platform.machine()},
            "versions": {k: dist_version(k) for k in ("torch", "timm", "coremltools", "numpy")}
                        | {"python": platform.python_version(), "ane_vit": dist_version("ane-vit")},
            "original": {"repository": "https://github.com/apple/ml-vision-transformers-ane", "commit": ORIGINAL_COMMIT,
                         "citation": "apple2023mlvitane",
                         "model": "its own _build_model(split_head=True, channel_buffer_align=False, local windows 8x8), "
                                  "weights: ane_vit.testing.randomize_(seed=0) of ane_vit.moat.build_model, same configuration, "
                                  "loaded with ane_vit.port.seed.to_seed_state_dict"},
            "third_party": {"repository": "https://github.com/RooKichenn/pytorch-MOAT", "commit": THIRD_PARTY_COMMIT,
                            "model": "classification.moat.tiny_moat_1(img_size=(256, 256), num_classes=1000, use_window=...), "
                                     "ane_vit.testing.randomize_(seed=0); timm 1.0's timm.models._efficientnet_blocks aliased "
                                     "as the timm.models.efficientnet_blocks the code imports (same classes)"},
            "code_note": "Neither repository's code is part of this project: each was read from a checkout outside it.",
            "conversion": {"function": "ane_vit.export.to_mlprogram", "compute_precision": "float16",
                           "minimum_deployment_target": "iOS16", "input": "TensorType (1, 3, 256, 256), torch.rand seed 0", "mode": "eval"},
        },
        "programs": programs,
    }
    Path(args.external_output).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.external_output}: {len(programs)} programs")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", default=str(ROOT / "results/published_latency.csv"))
    p.add_argument("--output", default=str(ROOT / "results/latency_estimate/calibration.json"))
    p.add_argument("--cache", default="/tmp/latency_calibration_cache")
    p.add_argument("--only", nargs="*", help="timm names to convert (default: every usable row)")
    p.add_argument("--external", action="store_true", help="convert the original's and the third-party MOAT programs instead")
    p.add_argument("--original", help="checkout of apple/ml-vision-transformers-ane at " + ORIGINAL_COMMIT)
    p.add_argument("--third-party", help="checkout of RooKichenn/pytorch-MOAT at " + THIRD_PARTY_COMMIT)
    p.add_argument("--external-output", default=str(ROOT / "results/latency_estimate/external_programs.json"))
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.external:
        if not (args.original or args.third_party):
            p.error("--external needs --original and/or --third-party (checkout folders)")
        return external(args)
    from ane_vit._versions import dist_version

    rows = [r for r in csv.DictReader(open(args.table, encoding="utf-8")) if r["use"] in ("calibration", "out_of_chip")]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    programs: dict[str, dict] = {}
    for r in rows:
        key = f"{r['timm_name']}@{r['input_size']}"
        if key in programs or (args.only and r["timm_name"] not in args.only):
            continue
        path = cache / f"{key}.json"
        if path.exists():
            programs[key] = json.loads(path.read_text())
            continue
        t0 = time.perf_counter()
        programs[key] = convert_one(r["timm_name"], int(r["input_size"]))
        path.write_text(json.dumps(programs[key]))
        s = programs[key]["summary"]
        print(f"{key}: {s['ops']} ops, {s['flops'] / 1e9:.2f} GFLOP, converted in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.only:
        return 0
    out_rows = []
    for r in rows:
        out_rows.append({
            "model": r["model"], "timm_name": r["timm_name"], "family": r["family"], "input_size": int(r["input_size"]),
            "device": r["device"], "chip": r["chip"], "os_tool": r["os_tool"], "source_group": r["source_group"],
            "published_ms": float(r["published_ms"]), "use": r["use"], "source": r["source"],
            "certainty": r["certainty"], "check": r["check"], "correction": r["correction"],
            "program": f"{r['timm_name']}@{r['input_size']}",
        })
    doc = {
        "provenance": {
            "what": "Program features of published models, built with timm and converted here; the latency of each row is "
                    "PUBLISHED (source, device and check per row), never measured here. Kind of the program numbers: program_fact.",
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "nice -n 10 /work/venv-timm/bin/python .ci/calibrate_latency.py",
            "machine": {"system": platform.system(), "machine": platform.machine()},
            "versions": {k: dist_version(k) for k in ("torch", "torchvision", "timm", "coremltools", "numpy")}
                        | {"python": platform.python_version(), "ane_vit": dist_version("ane-vit")},
            "model": "timm.create_model(name, pretrained=False); ane_vit.testing.randomize_(seed=0); eval(); "
                     "timm.utils.reparameterize_model",
            "conversion": {"function": "ane_vit.export.to_mlprogram", "convert_to": "mlprogram", "compute_precision": "float16",
                           "minimum_deployment_target": "iOS16", "input": "TensorType (1, 3, S, S), torch.rand seed 0", "mode": "eval"},
            "features": "ane_vit.latency.op_groups: per non-const op its FLOPs (2 x MACs of conv/linear/matmul/einsum), "
                        "non-constant input and output bytes with the last axis padded to 64 B, weight bytes; identical ops merged",
            "table": "results/published_latency.csv",
        },
        "rows": out_rows,
        "programs": programs,
    }
    Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.output}: {len(out_rows)} rows, {len(programs)} programs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Apple's Neural Engine rules on every model the book ships, and on the original's.

``write_rules_survey(path)`` runs ``check_rules`` (float16, eval mode) on our ANE models,
their plain references (``ane_vit.reference``), DeiT-Tiny and the digits model, and writes
the findings per rule with provenance to ``results/rules_findings.json``
(``python -m ane_vit.analysis --rules --survey results/rules_findings.json --overwrite``).
The original repository's models (apple/ml-vision-transformers-ane, commit c42abad) are
recorded data in the same file, as in ``results/original_programs.json``: this package
neither contains nor ships their code. ``original_rows(checkout)`` recorded them from a
checkout of that commit outside this repository (``--original-checkout DIR``);
without it, the rows already in the file are kept.

``load_rules_findings`` reads and checks the file; ``rules_table`` makes the markdown
table the book shows (chapter 11). Counts and bytes are facts of the graph, not latency.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import subprocess
import sys
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from .rules import APPLE_RULES, RULES, RulesReport, check_rules

__all__ = [
    "RULES_FILE",
    "ORIGINAL_COMMIT",
    "SurveyModel",
    "survey_models",
    "rules_findings_path",
    "survey_rows",
    "original_rows",
    "converted_literals",
    "write_rules_survey",
    "load_rules_findings",
    "rules_table",
    "rules_totals_table",
]

#: File name of the survey, in the repository's ``results/`` folder.
RULES_FILE = "rules_findings.json"
#: The original repository's commit whose models the survey records.
ORIGINAL_COMMIT = "c42abada32e96686f4d0bb37acb79ef7d99602ed"
_ORIGINAL_REPO = "https://github.com/apple/ml-vision-transformers-ane"
_GROUPS = ("ours", "reference", "original")
_TOP_MODULES = 6  # module paths recorded per rule and model


@dataclass(frozen=True)
class SurveyModel:
    """One model of the survey: a MOAT or DeiT configuration in one implementation.

    ``group`` is ``"ours"`` (the ANE layout), ``"reference"`` (the plain twin) or
    ``"original"``; ``weights`` says how the weights were set.
    """

    name: str
    group: str
    family: str
    arch: str
    size: int
    attention_mode: str = "global"
    pe_type: str = "SINGLE_HEAD_RPE"
    channel_buffer_align: bool = True
    weights: str = "random"

    @property
    def config(self) -> str:
        """The configuration shared by the implementations, e.g. ``tiny-moat-0 256 global SINGLE_HEAD_RPE``."""
        parts = [self.arch, str(self.size)]
        if self.family == "moat":
            parts += [self.attention_mode, self.pe_type] + ([] if self.channel_buffer_align else ["unaligned"])
        return " ".join(parts)


def survey_models() -> list[SurveyModel]:
    """What the book ships, ANE and reference: tiny-moat-0/1 at 256 (global and local,
    SINGLE_HEAD_RPE as the export command line; LePE_ADD global as in the original's
    recorded programs), DeiT-Tiny at 224 and the trained digits micro-moat at 64."""
    configs = [
        ("moat", "tiny-moat-0", 256, "global", "SINGLE_HEAD_RPE", True),
        ("moat", "tiny-moat-0", 256, "local", "SINGLE_HEAD_RPE", True),
        ("moat", "tiny-moat-0", 256, "global", "LePE_ADD", True),
        ("moat", "tiny-moat-1", 256, "global", "SINGLE_HEAD_RPE", True),
        ("moat", "tiny-moat-1", 256, "local", "SINGLE_HEAD_RPE", True),
        ("moat", "tiny-moat-1", 256, "global", "LePE_ADD", False),
        ("deit", "deit-tiny", 224, "global", "NONE", True),
        ("digits", "micro-moat", 64, "global", "LePE_ADD", True),
    ]
    models = []
    for family, arch, size, mode, pe, align in configs:
        for group in ("ours", "reference"):
            cfg = SurveyModel("", group, family, arch, size, mode, pe, align, "trained" if family == "digits" else "random")
            models.append(replace(cfg, name=f"{group} {cfg.config}"))
    return models


def rules_findings_path() -> Path:
    """``results/rules_findings.json`` of the repository this package sits in."""
    return Path(__file__).resolve().parents[2] / "results" / RULES_FILE


def _build(m: SurveyModel) -> tuple[nn.Module, torch.Tensor]:
    """The model (eval mode) and its input: random weights (``randomize_``, seed 0, ported to
    the ANE model as the benchmark does) or, for the digits model, the shipped trained ones."""
    impl = "ane" if m.group == "ours" else "reference"
    if m.family == "digits":
        from ..digits import load_model

        return load_model(impl), torch.rand(1, 3, m.size, m.size, generator=torch.Generator().manual_seed(0))
    from ..bench import BenchSpec

    spec = BenchSpec(m.name, m.family, impl, m.arch, m.size, m.attention_mode, m.pe_type,
                     channel_buffer_align=m.channel_buffer_align)
    module, x, _ = spec.build()
    return module, x


def _row(m: SurveyModel, report: RulesReport, extra: dict | None = None) -> dict:
    by_rule = report.by_rule()
    modules = {rid: dict(report.by_module(rid).most_common(_TOP_MODULES)) for rid in RULES if by_rule[rid]["findings"]}
    return {
        "name": m.name, "group": m.group, "family": m.family, "arch": m.arch, "config": m.config,
        "input_shape": report.input_shapes[0], "attention_mode": m.attention_mode, "pe_type": m.pe_type,
        "channel_buffer_align": m.channel_buffer_align, "weights": m.weights, **(extra or {}),
        "findings_total": len(report.findings),
        "by_severity": dict(Counter(f.severity for f in report.findings)),
        "by_rule": by_rule, "facts": report.facts, "modules": modules,
    }


def survey_rows(models: Sequence[SurveyModel] | None = None) -> list[dict]:
    """``check_rules`` (float16) on each model; one JSON-ready row per model."""
    rows = []
    for m in models if models is not None else survey_models():
        module, x = _build(m)
        rows.append(_row(m, check_rules(module, x, dtype="float16", name=m.name)))
    return rows


# --------------------------------------------------------------------------- the original


def _original_configs() -> list[dict]:
    """The configurations of ``results/original_programs.json``, the original's recorded programs."""
    from ..bench.original import load_original

    return load_original()["results"]


@contextlib.contextmanager
def _original_on_path(checkout: Path):
    """Import the original's ``vision_transformers`` from ``checkout`` for the duration; timm
    (used only to initialise tables that the loaded weights overwrite) is stubbed if missing,
    as it was for ``results/original_programs.json``."""
    added = {}
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        timm, models, layers = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))
        layers.trunc_normal_ = nn.init.trunc_normal_
        timm.models, models.layers = models, layers
        added = {"timm": timm, "timm.models": models, "timm.models.layers": layers}
    sys.modules.update(added)
    sys.path.insert(0, str(checkout))
    logging.disable(logging.INFO)  # the original logs each layer it builds
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        sys.path.remove(str(checkout))
        for name in [*added, *[k for k in sys.modules if k.split(".")[0] == "vision_transformers"]]:
            sys.modules.pop(name, None)


def original_rows(checkout: str | os.PathLike) -> tuple[list[dict], dict]:
    """Build the original's MOATs from a checkout of commit ``ORIGINAL_COMMIT`` (outside this
    repository) as ``results/original_programs.json`` did, and check them.

    Each configuration is built with the original's ``_build_model`` and the arguments of its
    export script (``split_head=True``, ``channel_buffer_align=False``, 8x8 local windows);
    its weights are ours, ``randomize_(seed=0)`` on ``build_model`` with the same
    configuration, under the original's names (``ane_vit.port.to_seed_state_dict``, strict).

    Returns:
        ``(rows, provenance)``.

    Raises:
        ValueError: if ``checkout`` is not a git checkout of ``ORIGINAL_COMMIT``.
    """
    from ..moat import build_model
    from ..port import to_seed_state_dict
    from ..testing import randomize_

    checkout = Path(checkout).resolve()
    try:
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = ""
    if head != ORIGINAL_COMMIT:
        raise ValueError(f"expected a git checkout of {_ORIGINAL_REPO} at {ORIGINAL_COMMIT} in {checkout}, got "
                         f"{'HEAD ' + head if head else 'no git checkout'}")
    if Path(__file__).resolve().parents[2] in checkout.parents or checkout == Path(__file__).resolve().parents[2]:
        raise ValueError(f"the original's checkout must lie outside this repository, got {checkout}")
    rows = []
    with _original_on_path(checkout), contextlib.redirect_stdout(io.StringIO()):  # it prints while building
        from vision_transformers.attention_utils import PEType as OriginalPE
        from vision_transformers.model import _build_model

        for cfg in _original_configs():
            shape = tuple(cfg["input_shape"])
            local = [8, 8] if cfg["attention_mode"] == "local" else None
            _, original = _build_model(shape=shape, base_arch=cfg["arch"], split_head=True, pe_type=OriginalPE[cfg["pe_type"]],
                                       channel_buffer_align=False, attention_mode=cfg["attention_mode"], local_window_size=local)
            _, ours = build_model(shape, cfg["arch"], attention_mode=cfg["attention_mode"], pe_type=cfg["pe_type"],
                                  channel_buffer_align=False, local_window_size=local)
            original.load_state_dict(to_seed_state_dict(randomize_(ours, seed=0)), strict=True)
            m = SurveyModel("", "original", "moat", cfg["arch"], shape[-1], cfg["attention_mode"], cfg["pe_type"],
                            all(c % 32 == 0 for c in [*cfg["stem_size"], *cfg["hidden_size"]]), "random (ours, ported)")
            m = replace(m, name=f"original {m.config}")
            x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
            rows.append(_row(m, check_rules(original.eval(), x, dtype="float16", name=m.name)))
    provenance = {
        "repository": _ORIGINAL_REPO, "commit": ORIGINAL_COMMIT, "citation": "apple2023mlvitane",
        "code_note": "The original's code is not part of this project: it was imported from a checkout of the commit "
                     "above outside this repository, only to build its models and check them.",
        "date_utc": _now(), "machine": _machine(), "versions": _versions(),
        "how_built": "vision_transformers.model._build_model with the arguments of the original's export.py "
                     "(split_head=True, channel_buffer_align=False, local windows 8x8), the configurations of "
                     "results/original_programs.json; timm stubbed (trunc_normal_ from torch) where not installed",
        "weights": "ane_vit.testing.randomize_(seed=0) on ane_vit.moat.build_model with the same configuration, loaded "
                   "with ane_vit.port.to_seed_state_dict (strict: every key)",
        "command": "python -m ane_vit.analysis --rules --survey results/rules_findings.json --original-checkout DIR --overwrite",
    }
    return rows, provenance


# --------------------------------------------------------------------------- what converters do


class _LiteralToy(nn.Module):
    """Apple's float-literal example: ``exp(conv(x) * 0.5 + 1.0)``, two literals and an exp."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 64, 1)

    def forward(self, x):
        return torch.exp(self.conv(x) * 0.5 + 1.0)


def converted_literals() -> dict:
    """Where Apple's float-literal rule meets the converters: the toy ``_LiteralToy`` (float16,
    input ``(1, 64, 1, 64)``) converted by coremltools (``ane_vit.export.to_mlprogram``) and by
    coreai-torch (``torch.export`` of the float16 module, Core AI's decompositions); the
    float32 tensors in each program and its ops. A converter that is not installed is
    recorded as such."""
    import re

    from .._versions import dist_version
    from ..testing import randomize_

    toy = randomize_(_LiteralToy(), seed=0).eval()
    x = torch.rand(1, 64, 1, 64, generator=torch.Generator().manual_seed(0))
    graph = check_rules(toy, x, name="literal toy")
    out = {"module": "exp(conv1x1(x) * 0.5 + 1.0), float16, x: (1, 64, 1, 64)",
           "graph_findings": {rid: row["findings"] for rid, row in graph.by_rule().items() if row["findings"]}}
    try:
        from ..export import to_mlprogram
        from ..interpret import load_program

        prog = load_program(to_mlprogram(toy, x))
        ops = [op for op in prog.functions["main"].operations]
        out["coremltools"] = {
            "version": dist_version("coremltools"), "compute_precision": "float16",
            "ops": [op.op_type for op in ops if op.op_type != "const"],
            "float32_tensors": sum(1 for op in ops for v in op.outputs if getattr(v.dtype, "__name__", "") == "fp32"),
        }
    except ImportError as err:
        out["coremltools"] = {"version": "not installed", "error": str(err)}
    try:
        import warnings

        import coreai_torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(toy.half(), (x.half(),)).run_decompositions(coreai_torch.get_decomp_table())
            with contextlib.redirect_stdout(io.StringIO()):
                text = str(coreai_torch.TorchConverter().add_exported_program(ep, input_names=["x"], output_names=["y"]).to_coreai())
        out["coreai"] = {
            "version": {d: dist_version(d) for d in ("coreai-core", "coreai-torch")},
            "ops": [op for op in re.findall(r"= (coreai\.[\w.]+)", text) if op != "coreai.constant"],
            "float32_tensors": len(re.findall(r"tensor<[^<>]*f32>", text)),
            "float16_scalar_constants": len(re.findall(r"coreai\.constant dense<[-0-9.e+]+> : tensor<f16>", text)),
        }
    except ImportError as err:
        out["coreai"] = {"version": "not installed", "error": str(err)}
    return out


# --------------------------------------------------------------------------- the file


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _machine() -> dict:
    return {"system": platform.system(), "machine": platform.machine(), "processor": platform.processor() or "unknown"}


def _versions() -> dict:
    import numpy

    from .. import __version__
    from .._versions import dist_version

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "coremltools": dist_version("coremltools"), "coreai-torch": dist_version("coreai-torch"), "ane_vit": __version__}


def write_rules_survey(path: str | os.PathLike | None = None, overwrite: bool = False,
                       original_checkout: str | os.PathLike | None = None,
                       models: Sequence[SurveyModel] | None = None, converters: bool = True) -> Path:
    """Check every survey model and write the findings with provenance to ``path``.

    The original's rows come from ``original_checkout`` when given, else from the existing
    file (recorded data); a file without them and no checkout is refused. ``models``
    (default ``survey_models()``) are checked anew; ``converters=False`` keeps the file's
    ``converted_literals`` record instead of converting the toy again.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: no original rows to keep and no checkout to record them from.
    """
    path = Path(path) if path is not None else rules_findings_path()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    old = load_rules_findings(path) if path.exists() else None
    if original_checkout is not None:
        original, original_prov = original_rows(original_checkout)
    elif old is not None:
        original = [r for r in old["results"] if r["group"] == "original"]
        original_prov = old["provenance"]["original"]
    else:
        raise ValueError(f"{path} does not exist: pass original_checkout (--original-checkout DIR) to record the original's rows")
    if not converters and (old is None or "converters" not in old):
        raise ValueError(f"converters=False keeps the converted_literals record of {path}, which has none")
    data = {
        "provenance": {
            "what": "Apple's Neural Engine rules checked on the torch.export graph of each model (ane_vit.analysis.check_rules, "
                    "float16 copy in eval mode): findings, counts and bytes per rule. Program facts, not latency.",
            "rules_source": APPLE_RULES, "rules_citation": "applecoreaimodelsrules",
            "date_utc": _now(), "machine": _machine(), "versions": _versions(),
            "command": "python -m ane_vit.analysis --rules --survey results/rules_findings.json --overwrite",
            "checker": "ane_vit.analysis.check_rules(model, x, dtype='float16'); x = torch.rand(1, 3, H, W), seed 0",
            "weights": "ours and reference: ane_vit.bench.BenchSpec(...).build(): ane_vit.testing.randomize_(reference, seed=0), "
                       "ported to the ANE model; digits: the shipped trained weights (ane_vit.digits.load_model)",
            "bytes": "padded: last axis padded to 64 bytes (as the ANE stores it); dense: packed; decimal units in the book",
            "original": original_prov,
        },
        "rules": {rid: {"severity": r.severity, "title": r.title, "apple": r.apple} for rid, r in RULES.items()},
        "results": [*survey_rows(models), *original],
        "converters": converted_literals() if converters else old["converters"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


_PROVENANCE = ("what", "rules_source", "date_utc", "machine", "versions", "command", "checker", "weights", "original")
_ORIGINAL_PROVENANCE = ("repository", "commit", "date_utc", "versions", "how_built", "weights")
_ROW = ("name", "group", "config", "input_shape", "findings_total", "by_rule", "facts")


def load_rules_findings(path: str | os.PathLike | None = None) -> dict:
    """Read ``results/rules_findings.json`` (or ``path``) and check it.

    Raises:
        FileNotFoundError: naming the path.
        ValueError: naming the path and what is missing (a provenance field, a row field, a
            rule the checker has and the file lacks, a group other than ours/reference/original).
    """
    path = Path(path) if path is not None else rules_findings_path()
    if not path.is_file():
        raise FileNotFoundError(f"no rules survey at {path}; make it with python -m ane_vit.analysis --rules --survey {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    for key in ("provenance", "rules", "results"):
        if key not in data:
            raise ValueError(f"{path}: no field {key!r}; expected provenance, rules, results")
    for key in _PROVENANCE:
        if key not in data["provenance"]:
            raise ValueError(f"{path}: provenance has no field {key!r}; expected {list(_PROVENANCE)}")
    for key in _ORIGINAL_PROVENANCE:
        if key not in data["provenance"]["original"]:
            raise ValueError(f"{path}: provenance.original has no field {key!r}; expected {list(_ORIGINAL_PROVENANCE)}")
    for i, row in enumerate(data["results"]):
        for key in _ROW:
            if key not in row:
                raise ValueError(f"{path}: results[{i}] has no field {key!r}; expected {list(_ROW)}")
        if row["group"] not in _GROUPS:
            raise ValueError(f"{path}: results[{i}] ({row['name']}) has group {row['group']!r}; expected one of {_GROUPS}")
        missing = [rid for rid in RULES if rid not in row["by_rule"]]
        if missing:
            raise ValueError(f"{path}: results[{i}] ({row['name']}) lacks the rules {missing}: re-run the survey")
    return data


def rules_table(data: dict, names: Sequence[str], labels: Sequence[str] | None = None,
                value: str = "findings", scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
    """A markdown table: one line per rule (and the total), one column per named row.

    Args:
        data: ``load_rules_findings()``.
        names: the rows' ``name`` values, in column order.
        labels: column headers (default: the names).
        value: ``"findings"``, ``"count"``, ``"bytes"`` or ``"dense_bytes"``.
        scale, fmt: each value is divided by ``scale`` and formatted with ``fmt``
            (e.g. ``1e6, "{:.2f}"`` for MB); 0 is shown as ``-``.

    Raises:
        KeyError: naming a row that is not in ``data`` and the names that are.
    """
    rows = {r["name"]: r for r in data["results"]}
    for n in names:
        if n not in rows:
            raise KeyError(f"no row {n!r}; the rows are {list(rows)}")
    labels = list(labels) if labels is not None else list(names)
    lines = ["| rule | severity | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(names)]
    totals = [0.0] * len(names)
    for rid in data["rules"]:
        vals = [rows[n]["by_rule"][rid][value] for n in names]
        totals = [t + v for t, v in zip(totals, vals)]
        cells = [fmt.format(v / scale) if v else "-" for v in vals]
        lines.append(f"| `{rid}` | {data['rules'][rid]['severity']} | " + " | ".join(cells) + " |")
    lines.append("| **total** | | " + " | ".join(f"**{fmt.format(t / scale)}**" for t in totals) + " |")
    return "\n".join(lines)


def rules_totals_table(data: dict, rules: Sequence[str] | None = None) -> str:
    """A markdown table: one line per configuration, one column per group (reference,
    original, ours), each cell the findings (of ``rules``, default all), blank where a group
    has no such model.

    Raises:
        KeyError: naming an unknown rule id and the known ones.
    """
    rules = list(rules) if rules is not None else list(data["rules"])
    for rid in rules:
        if rid not in data["rules"]:
            raise KeyError(f"unknown rule {rid!r}; the rules are {list(data['rules'])}")
    configs: dict[str, dict[str, int]] = {}
    for row in data["results"]:
        configs.setdefault(row["config"], {})[row["group"]] = sum(row["by_rule"][rid]["findings"] for rid in rules)
    groups = ("reference", "original", "ours")
    lines = ["| configuration | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    for config, cells in configs.items():
        lines.append(f"| {config} | " + " | ".join(f"{cells[g]:,}" if g in cells else "" for g in groups) + " |")
    return "\n".join(lines)

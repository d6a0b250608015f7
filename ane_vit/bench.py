"""Build, export and compare the ANE and reference models side by side.

``python -m ane_vit.bench`` builds each model twice - the ANE layout and its plain
reference twin, with the same weights (ported) - exports both to Core ML ML Programs and
records, for every program: export time, ``.mlpackage`` size, op count, layout ops and the
bytes they move, activation bytes with the last axis padded to 64 bytes, weight bytes,
readiness findings by rule, program parity (the numpy interpreter of the program against
PyTorch fp32) and the PyTorch CPU latency. The results go to ``results/<name>.json`` with
their provenance, and a chart next to it; the book draws its comparison plots from that file.

Every number carries a ``kind`` (see ``KINDS``): ``measured_cpu`` (timed on this machine's
CPU), ``program_fact`` (a count or size of the model, its program or its file) or
``derived`` (computed from other numbers: ratios, PSNR). This module never produces a
Neural Engine latency: that is only ever measured on a device (``ane_vit.device``) or
quoted from a cited source. See ``notebooks/06_export_and_inspection.ipynb``.

Shapes: MOAT ``x: (1, 3, 256, 256) -> 4 NCHW stage maps``; DeiT ``x: (1, 3, 224, 224) ->
(1, 1000)``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "KINDS",
    "PLOT_METRICS",
    "BenchSpec",
    "default_specs",
    "cpu_latency",
    "cpu_latency_interleaved",
    "provenance",
    "run_benchmark",
    "save_results",
    "load_results",
    "comparison_table",
    "plot_metric",
    "plot_bench",
    "main",
]

SCHEMA_VERSION = 1

#: What each ``kind`` label on a number means. No kind here is a Neural Engine latency.
KINDS: dict[str, str] = {
    "measured_cpu": "timed on this machine's CPU (PyTorch latency, export wall time); not the Neural Engine",
    "program_fact": "a count or size of the model, its converted program or its file on disk; not a latency",
    "derived": "computed from other numbers: ratios, PSNR of the interpreted program against PyTorch",
}

#: Metrics the chart draws, key -> (what it is, axis label with unit, divisor of the stored value).
PLOT_METRICS: dict[str, tuple[str, str, float]] = {
    "cpu_latency_median_ms": ("PyTorch CPU latency", "median latency (ms)", 1.0),
    "op_count": ("Ops in the program", "ops (const excluded)", 1.0),
    "layout_bytes_padded": ("Bytes written by layout ops, last axis padded to 64 B", "layout-op outputs (MiB)", 2.0**20),
    "activation_bytes_padded": ("Activation bytes, last axis padded to 64 B", "activations (MiB)", 2.0**20),
}

_IMPLEMENTATIONS = ("reference", "ane")
Builder = Callable[["BenchSpec"], "tuple[nn.Module, torch.Tensor, Any]"]


@dataclass(frozen=True)
class BenchSpec:
    """One model to benchmark: an architecture at one input size, in one implementation.

    ``implementation="ane"`` builds the ANE layout with the weights of the reference twin
    built from the same ``seed`` (ported), so both programs of a pair compute the same
    function. ``builder`` replaces the built-in families (``"moat"``, ``"deit"``): a
    callable ``spec -> (module, example_input, config_or_None)``, e.g. for a tiny test model.

    Shapes: ``example_input: (1, 3, image_size, image_size)`` for the built-in families.
    """

    name: str
    family: str
    implementation: str
    arch: str
    image_size: int
    attention_mode: str = "global"
    pe_type: str = "SINGLE_HEAD_RPE"
    split_head: bool = True
    seed: int = 0
    builder: Builder | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.implementation not in _IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {_IMPLEMENTATIONS}, got {self.implementation!r}")
        if self.builder is None and self.family not in ("moat", "deit"):
            raise ValueError(f"family must be 'moat' or 'deit' (or pass a builder), got {self.family!r}")

    @property
    def pair(self) -> str:
        """The name shared by the two implementations of one model (``name`` minus the suffix)."""
        suffix = "_" + self.implementation
        return self.name[: -len(suffix)] if self.name.endswith(suffix) else self.name

    def example_input(self) -> torch.Tensor:
        """A fixed random image, the same for both implementations of a pair."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(1, 3, self.image_size, self.image_size, generator=gen)

    def build(self) -> tuple[nn.Module, torch.Tensor, Any]:
        """Build ``(module in eval mode, example input, config or None)``."""
        torch.manual_seed(self.seed)
        if self.builder is not None:
            module, example, config = self.builder(self)
        elif self.family == "moat":
            module, example, config = _build_moat(self)
        else:
            module, example, config = _build_deit(self)
        return module.eval(), example, config


def _build_moat(spec: BenchSpec):
    from .attention import PEType
    from .moat import build_model
    from .port.moat import port_moat_weights
    from .reference.moat import build_reference_model

    shape = (1, 3, spec.image_size, spec.image_size)
    kwargs = dict(shape=shape, base_arch=spec.arch, attention_mode=spec.attention_mode, pe_type=PEType[spec.pe_type])
    config, reference = build_reference_model(**kwargs)
    if spec.implementation == "reference":
        return reference, spec.example_input(), config
    config, ane = build_model(split_head=spec.split_head, **kwargs)
    return port_moat_weights(reference.eval(), ane), spec.example_input(), config


def _build_deit(spec: BenchSpec):
    from .deit import DEIT_CONFIGS, build_deit
    from .port.deit import port_deit_weights
    from .reference.deit import ReferenceDeiT

    config = DEIT_CONFIGS[spec.arch]
    reference = ReferenceDeiT(config, image_size=spec.image_size, num_classes=1000)
    if spec.implementation == "reference":
        return reference, spec.example_input(), config
    ane = build_deit(config, image_size=spec.image_size, num_classes=1000, split_head=spec.split_head)
    return port_deit_weights(reference.eval(), ane), spec.example_input(), config


def default_specs(pe_type: str = "SINGLE_HEAD_RPE") -> list[BenchSpec]:
    """The issue's comparison: reference and ANE tiny-moat-0 and tiny-moat-1 at 256 (global
    and local attention) and DeiT-Tiny at 224; ``pe_type`` as the seed's ``export.py``."""
    specs = []
    for arch in ("tiny-moat-0", "tiny-moat-1"):
        for mode in ("global", "local"):
            for impl in _IMPLEMENTATIONS:
                specs.append(BenchSpec(f"{arch}_256_{mode}_{impl}", "moat", impl, arch, 256, mode, pe_type))
    for impl in _IMPLEMENTATIONS:
        specs.append(BenchSpec(f"deit-tiny_224_{impl}", "deit", impl, "deit-tiny", 224, "global", "NONE"))
    return specs


# ----------------------------------------------------------------------------- measuring


def _metric(value, unit: str, kind: str) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    return {"value": value, "unit": unit, "kind": kind}


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _outputs(v)]
    return [t for v in out for t in _outputs(v)]


def _summary(times: list[float], runs: int, warmup: int) -> dict:
    times = sorted(times)
    p90 = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]  # nearest-rank percentile
    return {"median_ms": statistics.median(times), "p90_ms": p90, "runs": runs, "warmup": warmup, "threads": torch.get_num_threads()}


@torch.no_grad()
def cpu_latency_interleaved(calls: Sequence[tuple[nn.Module, torch.Tensor]], runs: int = 20, warmup: int = 3) -> list[dict]:
    """PyTorch CPU latency of several ``module(example)`` calls timed in turn (A, B, A, B...).

    Interleaving spreads any change of load on a shared machine evenly over the models, so
    their ratio stays fair. Each gets ``warmup`` untimed calls first; returns one
    ``cpu_latency``-style dict per call, in order.

    Shapes: each ``example``: whatever its ``module`` takes.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for module, example in calls:
        for _ in range(warmup):
            module(example)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(runs):
        for (module, example), bucket in zip(calls, times):
            start = time.perf_counter()
            module(example)
            bucket.append((time.perf_counter() - start) * 1e3)
    return [_summary(t, runs, warmup) for t in times]


def cpu_latency(module: nn.Module, example: torch.Tensor, runs: int = 20, warmup: int = 3) -> dict:
    """PyTorch CPU latency of ``module(example)``: median and p90 (nearest rank) in ms over
    ``runs`` calls after ``warmup`` untimed calls, in this process with the current torch
    thread count. Returns ``{"median_ms", "p90_ms", "runs", "warmup", "threads"}``.

    Shapes: ``example``: whatever ``module`` takes.
    """
    return cpu_latency_interleaved([(module, example)], runs, warmup)[0]


def _program_metrics(path: Path) -> dict:
    from .analysis import analyze

    summary = analyze(path).summary()
    pick = {  # our metric -> (key of ProgramReport.summary(), unit)
        "op_count": ("ops", "ops"),
        "layout_op_count": ("layout_ops", "ops"),
        "layout_bytes": ("layout_bytes_dense", "bytes"),  # what the layout ops write
        "layout_bytes_padded": ("layout_bytes_padded", "bytes"),
        "activation_bytes_dense": ("activation_bytes_dense", "bytes"),
        "activation_bytes_padded": ("activation_bytes_padded", "bytes"),
        "padding_waste_bytes": ("padding_waste_bytes", "bytes"),
        "weight_bytes": ("weight_bytes", "bytes"),
        "flops": ("flops", "FLOP"),
        "max_rank": ("max_rank", "axes"),
    }
    metrics = {k: _metric(summary[s], unit, "program_fact") for k, (s, unit) in pick.items() if s in summary}
    by_rule = dict(summary.get("findings_by_rule", {}))
    metrics["findings_total"] = _metric(int(sum(by_rule.values())), "findings", "program_fact")
    metrics["findings_by_rule"] = _metric(by_rule, "findings", "program_fact")
    return metrics


def _parity_metrics(module, example, path: Path) -> dict:
    from .interpret import program_parity

    report = program_parity(module, example, model=path)  # the worst output
    return {
        "parity_psnr_db": _metric(float(report.psnr_db), "dB", "derived"),
        "parity_max_abs_error": _metric(float(report.max_abs), "abs", "derived"),
    }


def _bench_one(spec: BenchSpec, workdir: Path, parity: bool) -> tuple[dict, list[torch.Tensor], nn.Module, torch.Tensor]:
    """Build, export, analyse and check one model; latency is timed later, per pair."""
    from .export import export_model, package_nbytes

    module, example, config = spec.build()
    row: dict[str, Any] = {
        "name": spec.name,
        "pair": spec.pair,
        "family": spec.family,
        "implementation": spec.implementation,
        "arch": spec.arch,
        "input_shape": list(example.shape),
        "attention_mode": spec.attention_mode,
        "pe_type": spec.pe_type,
        "split_head": spec.split_head if spec.implementation == "ane" else None,
        "metrics": {},
        "errors": {},
    }
    metrics = row["metrics"]
    metrics["parameters"] = _metric(sum(p.numel() for p in module.parameters()), "parameters", "program_fact")
    with torch.no_grad():
        outputs = [t.detach().clone() for t in _outputs(module(example))]

    start = time.perf_counter()
    path = export_model(module, example, workdir / f"{spec.name}.mlpackage", config=config, overwrite=True)
    metrics["export_time_s"] = _metric(time.perf_counter() - start, "s", "measured_cpu")
    metrics["mlpackage_bytes"] = _metric(package_nbytes(path), "bytes", "program_fact")
    try:
        metrics.update(_program_metrics(path))
    except Exception as exc:  # keep benchmarking the others; the error is recorded
        row["errors"]["analysis"] = f"{type(exc).__name__}: {exc}"
    if parity:
        try:
            metrics.update(_parity_metrics(module, example, path))
        except Exception as exc:
            row["errors"]["parity"] = f"{type(exc).__name__}: {exc}"
    return row, outputs, module, example


def _record_latency(group: list[tuple[dict, nn.Module, torch.Tensor]], runs: int, warmup: int) -> str:
    """Time the models of one pair interleaved; store the numbers in their rows."""
    stats = cpu_latency_interleaved([(m, x) for _, m, x in group], runs, warmup)
    names = [row["name"] for row, _, _ in group]
    for (row, _, _), lat in zip(group, stats):
        row["metrics"]["cpu_latency_median_ms"] = _metric(lat["median_ms"], "ms", "measured_cpu")
        row["metrics"]["cpu_latency_p90_ms"] = _metric(lat["p90_ms"], "ms", "measured_cpu")
        row["latency_settings"] = {k: lat[k] for k in ("runs", "warmup", "threads")}
        row["latency_settings"]["interleaved_with"] = [n for n in names if n != row["name"]]
    parts = ", ".join(f"{row['implementation']} {lat['median_ms']:.1f} ms" for (row, _, _), lat in zip(group, stats))
    return f"PyTorch CPU latency, {group[0][0]['pair']}: {parts} (median of {runs}, interleaved)"


def _value(row: dict, metric: str):
    entry = row["metrics"].get(metric)
    return None if entry is None else entry["value"]


def _comparisons(rows: list[dict], outputs: dict[str, list[torch.Tensor]]) -> list[dict]:
    from .testing import psnr

    by_pair: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_pair.setdefault(row["pair"], {})[row["implementation"]] = row
    comparisons = []
    for pair, impls in by_pair.items():
        if set(impls) != set(_IMPLEMENTATIONS):
            continue
        ref, ane = impls["reference"], impls["ane"]
        metrics = {}
        for metric in ("cpu_latency_median_ms", "op_count", "layout_op_count", "layout_bytes", "activation_bytes_padded", "mlpackage_bytes", "export_time_s"):
            a, r = _value(ane, metric), _value(ref, metric)
            if a is not None and r:
                metrics[f"{metric}_ane_over_reference"] = _metric(a / r, "ratio", "derived")
        ref_out, ane_out = outputs[ref["name"]], outputs[ane["name"]]
        if len(ref_out) == len(ane_out) and all(r.shape == a.shape for r, a in zip(ref_out, ane_out)):
            worst = min(psnr(r, a) for r, a in zip(ref_out, ane_out))
            metrics["pytorch_ane_vs_reference_psnr_db"] = _metric(worst, "dB", "derived")
        comparisons.append({"pair": pair, "reference": ref["name"], "ane": ane["name"], "metrics": metrics})
    return comparisons


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(command: str | None = None, **settings) -> dict:
    """Where and how the numbers were made: machine (no host name), versions, UTC date,
    command line and settings."""
    from . import __version__

    return {
        "tool": "ane_vit.bench",
        "schema_version": SCHEMA_VERSION,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "system": platform.system(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_model": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "coremltools": _version("coremltools"),
            "numpy": _version("numpy"),
            "ane_vit": __version__,
        },
        "settings": settings,
        "kinds": dict(KINDS),
        "note": "No Neural Engine latency is produced here: latencies are PyTorch on this CPU.",
    }


def run_benchmark(
    specs: Sequence[BenchSpec],
    *,
    runs: int = 20,
    warmup: int = 3,
    threads: int = 1,
    parity: bool = True,
    keep_models: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    command: str | None = None,
) -> dict:
    """Benchmark ``specs`` in order; return ``{"provenance", "results", "comparisons"}``.

    ``threads`` fixes torch's CPU threads for the whole run (restored afterwards).
    ``.mlpackage`` files go to a temporary folder unless ``keep_models`` names one.
    The models of a pair (same ``spec.pair``) are timed interleaved once both are built.
    ``progress`` receives one line per model and one per pair. A failing analysis or
    parity step is recorded in the row's ``errors``, not raised; a failing build or export
    is raised.
    """
    if not specs:
        raise ValueError("specs is empty: nothing to benchmark")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"spec names must be unique, got {names}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    os.environ.setdefault("TQDM_DISABLE", "1")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows, outputs = [], {}
    try:
        prov = provenance(command, runs=runs, warmup=warmup, threads=threads, parity=parity, compute_precision="float16")
        with tempfile.TemporaryDirectory(prefix="ane_vit_bench_") as tmp:
            workdir = Path(keep_models) if keep_models is not None else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            pair_sizes = Counter(s.pair for s in specs)
            pending: dict[str, list] = {}  # pair -> [(row, module, example)] until it is complete
            for i, spec in enumerate(specs, 1):
                start = time.perf_counter()
                row, outputs[spec.name], module, example = _bench_one(spec, workdir, parity)
                rows.append(row)
                if progress is not None:
                    progress(f"[{i}/{len(specs)}] {_progress_line(row)} ({time.perf_counter() - start:.0f} s)")
                group = pending.setdefault(spec.pair, [])
                group.append((row, module, example))
                if len(group) == pair_sizes[spec.pair]:
                    line = _record_latency(pending.pop(spec.pair), runs, warmup)
                    if progress is not None:
                        progress(line)
    finally:
        torch.set_num_threads(old_threads)
    return {"provenance": prov, "results": rows, "comparisons": _comparisons(rows, outputs)}


def _progress_line(row: dict) -> str:
    m = row["metrics"]

    def fmt(metric, spec):
        return format(m[metric]["value"], spec) if metric in m else "n/a"

    line = (
        f"{row['name']}: export {fmt('export_time_s', '.1f')} s, {fmt('mlpackage_bytes', ',')} B, "
        f"{fmt('op_count', 'd')} ops, {fmt('findings_total', 'd')} findings, parity {fmt('parity_psnr_db', '.1f')} dB"
    )
    return line + "".join(f"; {k} failed: {v}" for k, v in row["errors"].items())


# ----------------------------------------------------------------------------- files


def save_results(results: dict, path: str | os.PathLike) -> Path:
    """Write a results dict as indented JSON (non-finite floats as strings); return the path."""

    def clean(obj):
        if isinstance(obj, float) and not math.isfinite(obj):
            return str(obj)  # "inf": JSON has no infinity
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(results), indent=1) + "\n")
    return path


def load_results(path: str | os.PathLike) -> dict:
    """Read a benchmark JSON, checking its shape; raise ``ValueError`` saying what is missing."""
    data = json.loads(Path(path).read_text())
    missing = [k for k in ("provenance", "results") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a benchmark results file; expected keys 'provenance' and 'results', missing {missing}")
    for row in data["results"]:
        for name, entry in row.get("metrics", {}).items():
            if entry.get("kind") not in KINDS:
                raise ValueError(f"{path}: metric {name!r} of {row.get('name')!r} has kind {entry.get('kind')!r}; expected one of {sorted(KINDS)}")
    data.setdefault("comparisons", [])
    return data


def _as_results(results) -> dict:
    return load_results(results) if isinstance(results, (str, os.PathLike)) else results


_TABLE_COLUMNS = [  # header, metric, scale, format
    ("export s", "export_time_s", 1.0, "{:.1f}"),
    ("package MB", "mlpackage_bytes", 1e6, "{:.2f}"),
    ("ops", "op_count", 1.0, "{:.0f}"),
    ("layout ops", "layout_op_count", 1.0, "{:.0f}"),
    ("layout MiB (dense)", "layout_bytes", 2.0**20, "{:.2f}"),
    ("padded act. MiB", "activation_bytes_padded", 2.0**20, "{:.1f}"),
    ("weights MiB", "weight_bytes", 2.0**20, "{:.2f}"),
    ("findings", "findings_total", 1.0, "{:.0f}"),
    ("parity dB", "parity_psnr_db", 1.0, "{:.1f}"),
    ("CPU median ms", "cpu_latency_median_ms", 1.0, "{:.1f}"),
    ("CPU p90 ms", "cpu_latency_p90_ms", 1.0, "{:.1f}"),
]


def comparison_table(results: dict | str | os.PathLike) -> str:
    """A markdown table, one line per program, of the numbers the benchmark recorded."""
    results = _as_results(results)
    header = ["model", "impl.", *(c[0] for c in _TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(_TABLE_COLUMNS)) + "|"]
    for row in results["results"]:
        cells = [row["pair"], row["implementation"]]
        for _, metric, scale, fmt in _TABLE_COLUMNS:
            value = _value(row, metric)
            if isinstance(value, str):
                value = float(value)  # "inf" as saved
            cells.append("-" if value is None else fmt.format(value / scale))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots


def _pairs(results: dict, metric: str) -> tuple[list[str], list[float | None], list[float | None]]:
    order, values = [], {}
    for row in results["results"]:
        if row["pair"] not in values:
            order.append(row["pair"])
            values[row["pair"]] = {}
        values[row["pair"]][row["implementation"]] = _value(row, metric)
    return order, [values[p].get("reference") for p in order], [values[p].get("ane") for p in order]


def _finding(label: str, ref: list, ane: list) -> str:
    ratios = [a / r for r, a in zip(ref, ane) if r and a]
    if not ratios:
        return label
    gm = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    if abs(gm - 1) < 0.02:
        return f"{label}: ANE ~ reference"
    factor = 1 / gm if gm < 1 else gm
    mean = " (geo. mean)" if len(ratios) > 1 else ""
    return f"{label}: ANE {factor:.2f}x {'lower' if gm < 1 else 'higher'}{mean}"


def plot_metric(results: dict | str | os.PathLike, metric: str, ax=None):
    """Grouped bars (reference vs ANE, one group per model) of one metric of a results file;
    the title states the geometric-mean ratio. Returns the axes."""
    import matplotlib.pyplot as plt

    from .plotting import COLORS, HATCHES

    if metric not in PLOT_METRICS:
        raise ValueError(f"metric must be one of {sorted(PLOT_METRICS)}, got {metric!r}")
    results = _as_results(results)
    label, ylabel, scale = PLOT_METRICS[metric]
    pairs, ref, ane = _pairs(results, metric)
    if ax is None:
        _, ax = plt.subplots()
    x = range(len(pairs))
    width = 0.38
    kinds = {row["metrics"][metric]["kind"] for row in results["results"] if metric in row["metrics"]}
    hatch = HATCHES["measured"] if kinds == {"measured_cpu"} else ""
    for offset, impl, vals in ((-width / 2, "reference", ref), (width / 2, "ane", ane)):
        heights = [float("nan") if v is None else v / scale for v in vals]
        ax.bar([i + offset for i in x], heights, width, color=COLORS[impl], hatch=hatch, label="ANE layout" if impl == "ane" else "reference")
    if metric == "cpu_latency_median_ms":  # p90 as a whisker above each median
        _, ref_p90, ane_p90 = _pairs(results, "cpu_latency_p90_ms")
        for offset, med, p90 in ((-width / 2, ref, ref_p90), (width / 2, ane, ane_p90)):
            for i, (m, p) in enumerate(zip(med, p90)):
                if m is not None and p is not None:
                    ax.plot([i + offset] * 2, [m, p], color=COLORS["neutral"], lw=1)
    ax.set_xticks(list(x), [p.replace("_", "\n", 2).replace("_", " ") for p in pairs], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(False, axis="x")
    ax.set_ylim(0, 1.2 * ax.get_ylim()[1])  # room for the legend above the bars
    ax.set_title(_finding(label, ref, ane), fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncols=2)
    return ax


def _provenance_text(results: dict) -> str:
    prov = results["provenance"]
    m, v = prov.get("machine", {}), prov.get("versions", {})
    s = prov.get("settings", {})
    return (
        f"Latency: PyTorch on the CPU ({m.get('cpu_model', '?')}, {s.get('threads', '?')} thread(s), median of "
        f"{s.get('runs', '?')} runs; whisker = p90), {prov.get('date_utc', '?')[:10]}, torch {v.get('torch', '?')}. "
        f"Counts and bytes: facts of the float16 programs (coremltools {v.get('coremltools', '?')}). "
        "Not Neural Engine latency."
    )


def plot_bench(results: dict | str | os.PathLike, path: str | os.PathLike | None = None):
    """The benchmark chart: the four ``PLOT_METRICS`` panels with the provenance note under
    them; saved to ``path`` when given. Returns the figure."""
    import matplotlib.pyplot as plt

    from .plotting import COLORS

    results = _as_results(results)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, metric in zip(axes.flat, PLOT_METRICS):
        plot_metric(results, metric, ax=ax)
    fig.suptitle("Same weights, two layouts: what the reference and ANE programs contain", fontweight="bold")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    # the figure-wide form of ane_vit.plotting.provenance_note
    fig.text(0.01, 0.01, _provenance_text(results), fontsize=7, color=COLORS["neutral"], ha="left", va="bottom", wrap=True)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


# ----------------------------------------------------------------------------- CLI


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
    parser.add_argument("--keep-models", metavar="DIR", help="keep the .mlpackage files in DIR, replacing packages of the same name (default: a temporary folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``python -m ane_vit.bench --help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    from .attention import PEType

    if args.pe_type not in PEType.__members__:
        parser.error(f"--pe-type must be one of {list(PEType.__members__)}, got {args.pe_type!r}")
    specs = default_specs(args.pe_type)
    if args.list:
        print("\n".join(s.name for s in specs))
        return 0
    if args.models:
        unknown = [p for p in args.models if not any(fnmatch.fnmatchcase(s.name, p) for s in specs)]
        if unknown:
            parser.error(f"unknown model(s) {unknown}; choose from: {', '.join(s.name for s in specs)}")
        specs = [s for s in specs if any(fnmatch.fnmatchcase(s.name, p) for p in args.models)]
    elif args.quick:
        specs = [s for s in specs if s.pair == "tiny-moat-0_256_global"]
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
    stem = args.name or f"bench_{platform.system().lower()}_cpu" + ("_quick" if args.quick else "")
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
    )
    results["provenance"]["wall_time_s"] = round(time.perf_counter() - start, 1)
    json_path = save_results(results, out_dir / f"{stem}.json")
    import matplotlib

    matplotlib.use("Agg")
    from .plotting import apply_style

    apply_style()
    fig = plot_bench(json_path, out_dir / f"{stem}.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(comparison_table(results))
    print(f"wrote {json_path} and {out_dir / f'{stem}.png'} in {results['provenance']['wall_time_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

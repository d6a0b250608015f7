"""The benchmark run: build each model of a pair, export it, analyse its program, check
program parity, time the pair interleaved on the CPU and compare the two implementations;
``run_benchmark`` is re-exported by ``ane_vit.bench``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .measure import cpu_latency_interleaved, provenance
from .results import _metric, _value
from .specs import _IMPLEMENTATIONS, BenchSpec


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _outputs(v)]
    return [t for v in out for t in _outputs(v)]


def _program_metrics(path: Path) -> dict:
    from ..analysis import analyze

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
        # width-aware (Apple's Neural Engine rules): layout ops that move the last axis, and
        # padded bytes as a lower bound (only the program's outputs padded) beside the upper
        "layout_ops_moving_width": ("layout_ops_moving_width", "ops"),
        "layout_ops_keeping_width": ("layout_ops_keeping_width", "ops"),
        "layout_bytes_moving_width_padded": ("layout_bytes_moving_width_padded", "bytes"),
        "layout_bytes_moving_width_padded_lower": ("layout_bytes_moving_width_padded_lower", "bytes"),
        "layout_bytes_padded_lower": ("layout_bytes_padded_lower", "bytes"),
        "activation_bytes_padded_lower": ("activation_bytes_padded_lower", "bytes"),
    }
    metrics = {k: _metric(summary[s], unit, "program_fact") for k, (s, unit) in pick.items() if s in summary}
    by_rule = dict(summary.get("findings_by_rule", {}))
    metrics["findings_total"] = _metric(int(sum(by_rule.values())), "findings", "program_fact")
    metrics["findings_by_rule"] = _metric(by_rule, "findings", "program_fact")
    return metrics


def _parity_metrics(module, example, path: Path) -> dict:
    from ..interpret import program_parity

    report = program_parity(module, example, model=path)  # the worst output
    return {
        "parity_psnr_db": _metric(float(report.psnr_db), "dB", "derived"),
        "parity_max_abs_error": _metric(float(report.max_abs), "abs", "derived"),
    }


def _weights_label(spec: BenchSpec) -> str:
    if spec.builder is not None:
        return "set by the spec's builder"
    return f"randomize_(seed={spec.seed})" if spec.weights == "random" else "as initialised"


def _widths(config) -> dict:
    """Channel widths and attention windows of a MOAT config, which rows of the original
    repository's programs are matched on (``ane_vit.bench.original``); ``{}`` for others."""
    from ..moat import MOATConfig

    if not isinstance(config, MOATConfig):
        return {}
    return {
        "stem_size": list(config.stem_size),
        "hidden_size": list(config.hidden_size),
        "window_size": [None if w is None else list(w) for w in config.window_size],
        "channel_buffer_align": bool(config.channel_buffer_align),
    }


def _bench_one(
    spec: BenchSpec, workdir: Path, parity: bool, timing: bool = True
) -> tuple[dict, list[torch.Tensor], nn.Module, torch.Tensor]:
    """Build, export, analyse and check one model; latency is timed later, per pair.
    ``timing=False`` records no export time (nothing measured on this CPU)."""
    from ..export import export_model, package_nbytes

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
        "weights": _weights_label(spec),
        **_widths(config),
        "metrics": {},
        "errors": {},
    }
    metrics = row["metrics"]
    metrics["parameters"] = _metric(sum(p.numel() for p in module.parameters()), "parameters", "program_fact")
    with torch.no_grad():
        outputs = [t.detach().clone() for t in _outputs(module(example))]

    start = time.perf_counter()
    path = export_model(module, example, workdir / f"{spec.name}.mlpackage", config=config, overwrite=True)
    if timing:
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


# metrics whose ANE / reference ratio each comparison records
_RATIO_METRICS = (
    "cpu_latency_median_ms", "op_count", "layout_op_count", "layout_bytes", "activation_bytes_padded",
    "activation_bytes_padded_lower", "layout_bytes_moving_width_padded", "layout_bytes_moving_width_padded_lower",
    "mlpackage_bytes", "export_time_s",
)


def _comparisons(rows: list[dict], outputs: dict[str, list[torch.Tensor]]) -> list[dict]:
    from ..testing import psnr

    by_pair: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_pair.setdefault(row["pair"], {})[row["implementation"]] = row
    comparisons = []
    for pair, impls in by_pair.items():
        if set(impls) != set(_IMPLEMENTATIONS):
            continue
        ref, ane = impls["reference"], impls["ane"]
        metrics = {}
        for metric in _RATIO_METRICS:
            a, r = _value(ane, metric), _value(ref, metric)
            if a is not None and r:
                metrics[f"{metric}_ane_over_reference"] = _metric(a / r, "ratio", "derived")
        ref_out, ane_out = outputs[ref["name"]], outputs[ane["name"]]
        if len(ref_out) == len(ane_out) and all(r.shape == a.shape for r, a in zip(ref_out, ane_out)):
            worst = min(psnr(r, a) for r, a in zip(ref_out, ane_out))
            metrics["pytorch_ane_vs_reference_psnr_db"] = _metric(worst, "dB", "derived")
        comparisons.append({"pair": pair, "reference": ref["name"], "ane": ane["name"], "metrics": metrics})
    return comparisons


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
    timing: bool = True,
) -> dict:
    """Benchmark ``specs`` in order; return ``{"provenance", "results", "comparisons"}``.

    ``timing=False`` measures nothing on this CPU (no PyTorch latency, no export time): the
    program facts alone, for a machine too loaded to time on (``runs`` and ``warmup`` are
    then ignored; ``ane_vit.bench.merge_timings`` can join them to an earlier timed file).
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
        if timing:
            prov = provenance(command, runs=runs, warmup=warmup, threads=threads, parity=parity, compute_precision="float16")
        else:
            prov = provenance(command, timing=False, threads=threads, parity=parity, compute_precision="float16")
        with tempfile.TemporaryDirectory(prefix="ane_vit_bench_") as tmp:
            workdir = Path(keep_models) if keep_models is not None else Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            pair_sizes = Counter(s.pair for s in specs)
            pending: dict[str, list] = {}  # pair -> [(row, module, example)] until it is complete
            for i, spec in enumerate(specs, 1):
                start = time.perf_counter()
                row, outputs[spec.name], module, example = _bench_one(spec, workdir, parity, timing)
                rows.append(row)
                if progress is not None:
                    progress(f"[{i}/{len(specs)}] {_progress_line(row)} ({time.perf_counter() - start:.0f} s)")
                group = pending.setdefault(spec.pair, [])
                group.append((row, module, example))
                if len(group) == pair_sizes[spec.pair]:
                    if not timing:
                        pending.pop(spec.pair)
                        continue
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

"""The benchmark chart: grouped reference-vs-ANE bars of one metric and the four-panel
figure with its provenance note; the public names are re-exported by ``ane_vit.bench``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .results import _as_results, _value

# Metrics the chart draws, key -> (what it is, axis label with unit, divisor of the stored
# value); public, with its documentation, as ``ane_vit.bench.PLOT_METRICS``.
PLOT_METRICS: dict[str, tuple[str, str, float]] = {
    "cpu_latency_median_ms": ("PyTorch CPU latency", "median latency (ms)", 1.0),
    "op_count": ("Ops in the program", "ops (const excluded)", 1.0),
    "layout_bytes_padded": ("Layout-op bytes (last axis padded to 64 B)", "layout-op outputs (MiB)", 2.0**20),
    "activation_bytes_padded": ("Activation bytes (last axis padded to 64 B)", "activations (MiB)", 2.0**20),
}


def _pairs(results: dict, metric: str) -> tuple[list[str], list[float | None], list[float | None]]:
    order, values = [], {}
    for row in results["results"]:
        if row["pair"] not in values:
            order.append(row["pair"])
            values[row["pair"]] = {}
        values[row["pair"]][row["implementation"]] = _value(row, metric)
    return order, [values[p].get("reference") for p in order], [values[p].get("ane") for p in order]


def _finding(label: str, ref: list, ane: list) -> str:
    """``label``, then on a second line the geometric-mean ratio (two lines keep the titles of
    neighbouring panels apart at the book's width)."""
    ratios = [a / r for r, a in zip(ref, ane) if r and a]
    if not ratios:
        return label
    gm = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    if abs(gm - 1) < 0.02:
        return f"{label}\nANE ~ reference"
    factor = 1 / gm if gm < 1 else gm
    mean = " (geo. mean)" if len(ratios) > 1 else ""
    return f"{label}\nANE {factor:.2f}x {'lower' if gm < 1 else 'higher'}{mean}"


def plot_metric(results: dict | str | os.PathLike, metric: str, ax=None):
    """Grouped bars (reference vs ANE, one group per model) of one metric of a results file;
    the title states the geometric-mean ratio. Returns the axes."""
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, HATCHES

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
    ax.set_xticks(list(x), [p.replace("_", "\n", 2).replace("_", " ") for p in pairs], fontsize=6.5)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(False, axis="x")
    ax.set_ylim(0, 1.2 * ax.get_ylim()[1])  # room for the legend above the bars
    ax.set_title(_finding(label, ref, ane), fontsize=8)
    ax.legend(fontsize=6.5, loc="upper right", ncols=2)
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

    from ..plotting import COLORS

    results = _as_results(results)
    fig, axes = plt.subplots(2, 2, figsize=(7.6, 7.2))  # about the book's column width: shown at 1:1
    for ax, metric in zip(axes.flat, PLOT_METRICS):
        plot_metric(results, metric, ax=ax)
    fig.suptitle("Same weights, two layouts: what the reference and ANE programs contain", fontweight="bold", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    # the figure-wide form of ane_vit.plotting.provenance_note
    fig.text(0.01, 0.005, _provenance_text(results), fontsize=6.5, color=COLORS["neutral"], ha="left", va="bottom", wrap=True)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig

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


def _ratio(base: list, ane: list) -> tuple[float, bool] | None:
    """Geometric mean of ours / base over the groups that have both, and whether it is a mean."""
    ratios = [a / r for r, a in zip(base, ane) if r and a]
    if not ratios:
        return None
    return math.exp(sum(math.log(x) for x in ratios) / len(ratios)), len(ratios) > 1


def _describe(gm: float) -> str:
    return "~" if abs(gm - 1) < 0.02 else f"{1 / gm if gm < 1 else gm:.2f}x {'lower' if gm < 1 else 'higher'}"


def _finding(label: str, ref: list, ane: list, orig: list | None = None) -> str:
    if orig is None:  # reference vs ANE; the ratio on a second line keeps neighbouring titles apart
        found = _ratio(ref, ane)
        if found is None:
            return label
        gm, many = found
        if abs(gm - 1) < 0.02:
            return f"{label}\nANE ~ reference"
        return f"{label}\nANE {_describe(gm)}" + (" (geo. mean)" if many else "")
    parts = [(name, _ratio(base, ane)) for name, base in (("reference", ref), ("original", orig))]
    parts = [f"{_describe(found[0])} {'than' if abs(found[0] - 1) >= 0.02 else ''} {name}".replace("  ", " ") for name, found in parts if found]
    return f"{label}\nours: " + ",\n".join(parts) + " (geo. means)" if parts else label  # narrow panels


def plot_metric(results: dict | str | os.PathLike, metric: str, ax=None, original=None):
    """Grouped bars (reference vs ANE, one group per model) of one metric of a results file;
    the title states the geometric-mean ratio. Returns the axes.

    ``original``: the original repository's recorded programs (``load_original()``, a path,
    or ``True`` for the repository's file) add a third, hatched bar per model where a
    recorded program matches (``ane_vit.bench.original``); it has no latency, so the latency
    panel keeps two bars.
    """
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, HATCHES
    from .original import _as_original, _legend_label, _original_values

    if metric not in PLOT_METRICS:
        raise ValueError(f"metric must be one of {sorted(PLOT_METRICS)}, got {metric!r}")
    results = _as_results(results)
    label, ylabel, scale = PLOT_METRICS[metric]
    pairs, ref, ane = _pairs(results, metric)
    orig = None
    if original is not None:
        original = _as_original(None if original is True else original)
        orig = _original_values(results, original, metric, pairs)
        if all(v is None for v in orig):
            orig = None
    if ax is None:
        _, ax = plt.subplots()
    x = range(len(pairs))
    kinds = {row["metrics"][metric]["kind"] for row in results["results"] if metric in row["metrics"]}
    hatch = HATCHES["measured"] if kinds == {"measured_cpu"} else ""
    series = [("reference", ref, COLORS["reference"], hatch, "reference")]
    if orig is not None:
        series.append(("original", orig, COLORS["original"], HATCHES["recorded"], _legend_label(original)))
    series.append(("ane", ane, COLORS["ane"], hatch, "ours (ANE layout)" if orig is not None else "ANE layout"))
    width = 0.76 / len(series)
    offsets = {name: (i - (len(series) - 1) / 2) * width for i, (name, *_) in enumerate(series)}
    for name, vals, color, bar_hatch, legend in series:
        heights = [float("nan") if v is None else v / scale for v in vals]
        ax.bar([i + offsets[name] for i in x], heights, width, color=color, hatch=bar_hatch, label=legend,
               edgecolor="white" if bar_hatch == HATCHES.get("recorded") else None)
    if metric == "cpu_latency_median_ms":  # p90 as a whisker above each median
        _, ref_p90, ane_p90 = _pairs(results, "cpu_latency_p90_ms")
        for name, med, p90 in (("reference", ref, ref_p90), ("ane", ane, ane_p90)):
            for i, (m, p) in enumerate(zip(med, p90)):
                if m is not None and p is not None:
                    ax.plot([i + offsets[name]] * 2, [m, p], color=COLORS["neutral"], lw=1)
    ax.set_xticks(list(x), [p.replace("_", "\n", 3).replace("_", " ") for p in pairs], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(False, axis="x")
    ax.set_ylim(0, 1.2 * ax.get_ylim()[1])  # room for the legend above the bars
    ax.set_title(_finding(label, ref, ane, orig), fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncols=len(series))
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


def plot_bench(results: dict | str | os.PathLike, path: str | os.PathLike | None = None, original=None):
    """The benchmark chart: the four ``PLOT_METRICS`` panels with the provenance note under
    them; saved to ``path`` when given. Returns the figure.

    ``original`` (see ``plot_metric``) adds the original repository's recorded programs as a
    third, hatched bar, and its source to the note.
    """
    import matplotlib.pyplot as plt

    from ..plotting import COLORS
    from .original import _as_original, original_note

    results = _as_results(results)
    if original is not None:
        original = _as_original(None if original is True else original)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, metric in zip(axes.flat, PLOT_METRICS):
        plot_metric(results, metric, ax=ax, original=original)
    title = "Same weights, two layouts: what the reference and ANE programs contain"
    if original is not None:
        title = "Reference, original and ours: what the programs contain"
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    # the figure-wide form of ane_vit.plotting.provenance_note
    note = _provenance_text(results) + ("" if original is None else " " + original_note(original))
    fig.text(0.01, 0.01, note, fontsize=7, color=COLORS["neutral"], ha="left", va="bottom", wrap=True)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig

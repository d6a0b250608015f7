"""The benchmark chart: grouped reference-vs-ANE bars of one metric and the four-panel
figure with its provenance note; the public names are re-exported by ``ane_vit.bench``.

Drawn for the book's content column (about 6.9 inches at 100 dpi, 690 pixels at 1280 pixels
of screen) with text at the body size or larger: horizontal bars, model names once on the
left, one legend, sizes in MB (10^6 bytes).
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

from .results import _as_results, _value

# Metrics the charts can draw, key -> (what it is, axis label with unit, divisor of the stored
# value); public, with its documentation, as ``ane_vit.bench.PLOT_METRICS``.
PLOT_METRICS: dict[str, tuple[str, str, float]] = {
    "cpu_latency_median_ms": ("PyTorch CPU latency", "median latency (ms)", 1.0),
    "op_count": ("Ops in the program", "ops (const excluded)", 1.0),
    "layout_bytes_moving_width_padded": ("Width-moving layout", "MB written", 1e6),
    "layout_bytes_padded": ("Layout-op bytes", "MB written", 1e6),
    "activation_bytes_padded": ("Activation bytes", "MB written", 1e6),
}
# The lower bound drawn as a tick on each bar of a padded-bytes metric (the bar is the upper
# bound: every op output padded to 64-byte rows; the tick: only the program's outputs padded).
LOWER_BOUNDS: dict[str, str] = {
    "layout_bytes_moving_width_padded": "layout_bytes_moving_width_padded_lower",
    "layout_bytes_padded": "layout_bytes_padded_lower",
    "activation_bytes_padded": "activation_bytes_padded_lower",
}
# The four panels of ``plot_bench``, in reading order; a file without timings (``--no-timing``)
# shows all layout bytes in the latency panel's place.
BENCH_PANELS = ("op_count", "layout_bytes_moving_width_padded", "activation_bytes_padded", "cpu_latency_median_ms")
_FACTS_PANELS = ("op_count", "layout_bytes_moving_width_padded", "activation_bytes_padded", "layout_bytes_padded")

_TEXT = 12  # points: 16.7 px at 100 dpi, the body text's 16 px when the figure is not scaled down
_COLUMN_INCHES = 6.9  # the book's content column at 100 dpi


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
        return f"{label}\nANE {_describe(gm)}" + ("*" if many else "")  # *: geometric mean over the models
    # three columns: one short line per ratio, ours / the other, so narrow panels keep their titles apart
    lines = [f"ours/{name} {found[0]:.2f}" + ("*" if found[1] else "")
             for name, base in (("reference", ref), ("original", orig)) if (found := _ratio(base, ane))]
    return "\n".join([label, *lines])


def _model_labels(results: dict, pairs: list[str]) -> list[str]:
    """Two-line tick labels, architecture and input size over attention mode (and the
    position encoding when the models differ in it), read from the rows; the pair name
    when a row does not say."""
    rows: dict[str, dict] = {}
    for row in results["results"]:
        rows.setdefault(row["pair"], row)
    pe_types = {r.get("pe_type") for r in rows.values() if r.get("pe_type") not in (None, "NONE")}

    def one(pair: str) -> str:
        r = rows.get(pair, {})
        if "arch" not in r or "input_shape" not in r:
            return pair.replace("_", " ")
        second = r.get("attention_mode") or ""
        if len(pe_types) > 1 and r.get("pe_type") not in (None, "NONE"):
            second += f" {r['pe_type']}"
        if r.get("channel_buffer_align") is False:
            second += "\nunaligned"
        return f"{r['arch']} {r['input_shape'][-1]}" + (f"\n{second.strip()}" if second.strip() else "")

    return [one(p) for p in pairs]


def plot_metric(results: dict | str | os.PathLike, metric: str, ax=None, original=None, legend: bool = True):
    """Grouped horizontal bars (reference vs ANE, one group per model) of one metric of a
    results file; the title states the geometric-mean ratio. Returns the axes.

    A padded-bytes metric (``LOWER_BOUNDS``) draws its upper bound as the bar (every op output
    padded to 64-byte rows) and its lower bound as a black tick on the bar (only the program's
    outputs padded). ``original``: the original repository's recorded programs
    (``load_original()``, a path, or ``True`` for the repository's file) add a third, hatched
    bar per model where a recorded program matches (``ane_vit.bench.original``); it has no
    latency, so the latency panel keeps two bars. ``legend=False`` leaves the legend to the
    caller (``plot_bench`` draws one for the figure).
    """
    import matplotlib.pyplot as plt

    from ..plotting import COLORS, HATCHES
    from .original import _as_original, _legend_label, _original_values

    if metric not in PLOT_METRICS:
        raise ValueError(f"metric must be one of {sorted(PLOT_METRICS)}, got {metric!r}")
    results = _as_results(results)
    label, xlabel, scale = PLOT_METRICS[metric]
    pairs, ref, ane = _pairs(results, metric)
    orig = None
    if original is not None:
        original = _as_original(None if original is True else original)
        orig = _original_values(results, original, metric, pairs)
        if all(v is None for v in orig):
            orig = None
    if ax is None:
        _, ax = plt.subplots(figsize=(_COLUMN_INCHES, 1.2 + 0.3 * len(pairs) * (3 if orig else 2)))
    y = range(len(pairs))
    kinds = {row["metrics"][metric]["kind"] for row in results["results"] if metric in row["metrics"]}
    hatch = HATCHES["measured"] if kinds == {"measured_cpu"} else ""
    series = [("reference", ref, COLORS["reference"], hatch, "reference")]
    if orig is not None:
        series.append(("original", orig, COLORS["original"], HATCHES["recorded"], _legend_label(original)))
    series.append(("ane", ane, COLORS["ane"], hatch, "ours (ANE layout)" if orig is not None else "ANE layout"))
    lower = None
    if metric in LOWER_BOUNDS:
        _, ref_low, ane_low = _pairs(results, LOWER_BOUNDS[metric])
        orig_low = _original_values(results, original, LOWER_BOUNDS[metric], pairs) if orig is not None else None
        lower = {"reference": ref_low, "original": orig_low, "ane": ane_low}
    height = 0.8 / len(series)
    offsets = {name: (i - (len(series) - 1) / 2) * height for i, (name, *_) in enumerate(series)}
    for name, vals, color, bar_hatch, legend_label in series:
        widths = [float("nan") if v is None else v / scale for v in vals]
        ax.barh([i + offsets[name] for i in y], widths, height, color=color, hatch=bar_hatch, label=legend_label,
                edgecolor="white" if bar_hatch == HATCHES.get("recorded") else None)
        for i, low in enumerate((lower or {}).get(name) or []):
            if low is not None and vals[i] is not None:
                yc = i + offsets[name]
                ax.plot([low / scale] * 2, [yc - height / 2, yc + height / 2], color="black", lw=2.5,
                        label="lower bound" if i == 0 and name == "reference" else None)
    if metric == "cpu_latency_median_ms":  # p90 as a whisker beyond each median
        _, ref_p90, ane_p90 = _pairs(results, "cpu_latency_p90_ms")
        for name, med, p90 in (("reference", ref, ref_p90), ("ane", ane, ane_p90)):
            for i, (m, p) in enumerate(zip(med, p90)):
                if m is not None and p is not None:
                    ax.plot([m, p], [i + offsets[name]] * 2, color=COLORS["neutral"], lw=1.5)
    ax.set_yticks(list(y), _model_labels(results, pairs), fontsize=_TEXT)
    if not ax.yaxis_inverted():  # first model on top (shared axes are inverted once)
        ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=_TEXT)
    ax.set_xlabel(xlabel, fontsize=_TEXT)
    ax.grid(False, axis="y")
    # regular weight: narrow panels side by side keep their titles within their own width
    ax.set_title(_finding(label, ref, ane, orig), fontsize=_TEXT, loc="left", fontweight="normal")
    if legend:
        ax.legend(fontsize=_TEXT, loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.06 * (len(pairs) < 3)),
                  ncols=2, frameon=False)
    return ax


def _provenance_text(results: dict) -> str:
    prov = results["provenance"]
    m, v = prov.get("machine", {}), prov.get("versions", {})
    s = prov.get("settings", {})
    facts = prov.get("program_facts") or {}
    fv = facts.get("versions", v)
    latency = (
        f"Latency: PyTorch on the CPU ({m.get('cpu_model', '?')}, {s.get('threads', '?')} thread(s), median of "
        f"{s.get('runs', '?')} runs; whisker: p90), {prov.get('date_utc', '?')[:10]}, torch {v.get('torch', '?')}."
        if s.get("timing", True) else "No timing in this file."
    )
    when = f", {str(facts.get('date_utc', '?'))[:10]}" if facts else ""
    dropped = prov.get("timings_dropped") or []
    if dropped:
        latency += (f" No latency for {', '.join(n.replace('_', ' ') for n in dropped)}: "
                    "their programs changed after the timing run.")
    return (
        f"{latency} Counts and bytes: facts of the float16 programs (coremltools {fv.get('coremltools', '?')}{when}); "
        "bars: every op output padded to 64-byte rows (upper bound), ticks: only the program's outputs (lower bound). "
        "*: geometric mean of the ratios over the models. Not Neural Engine latency."
    )


def plot_bench(results: dict | str | os.PathLike, path: str | os.PathLike | None = None, original=None):
    """The benchmark chart: the four ``BENCH_PANELS`` (ops, width-moving layout bytes,
    activation bytes, CPU latency; all layout bytes instead of the latency when the file has
    no timing) in two columns with the model names once on the left, one legend and the
    provenance note under them; saved to ``path`` when given. Returns the figure. Drawn 6.9
    inches wide with 12-point text, for the book's column.

    ``original`` (see ``plot_metric``) adds the original repository's recorded programs as a
    third, hatched bar, and its source to the note.
    """
    import matplotlib.pyplot as plt

    from ..plotting import COLORS
    from .original import _as_original, original_note

    results = _as_results(results)
    if original is not None:
        original = _as_original(None if original is True else original)
    n_pairs = len(_pairs(results, "op_count")[0])
    fig, axes = plt.subplots(2, 2, figsize=(_COLUMN_INCHES, 1.4 + 2 * (1.0 + 0.28 * n_pairs * (3 if original else 2))),
                             sharey=True)
    timed = any(_value(row, "cpu_latency_median_ms") is not None for row in results["results"])
    for ax, metric in zip(axes.flat, BENCH_PANELS if timed else _FACTS_PANELS):
        plot_metric(results, metric, ax=ax, original=original, legend=False)
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    title = "Reference and ANE programs, same weights" if original is None else "Reference, original and ours"
    fig.suptitle(title, fontweight="bold", fontsize=_TEXT + 1, y=0.995)
    fig.legend([handles[lab] for lab in labels], labels, loc="upper center", ncols=2, fontsize=_TEXT, frameon=False,
               bbox_to_anchor=(0.5, 0.97))
    note = _provenance_text(results) + ("" if original is None else " " + original_note(original))
    top = 1 - (0.45 + 0.25 * math.ceil(len(labels) / 2)) / fig.get_size_inches()[1]  # room for the title and legend
    fig.tight_layout(rect=(0, 0.0, 1, top))
    # wrapped inside the figure's width, so the saved image stays as wide as the book's column
    fig.text(0.0, -0.01, textwrap.fill(note, 74), fontsize=_TEXT, color=COLORS["neutral"], ha="left", va="top")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig

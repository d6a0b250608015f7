"""Plots of ``ane_vit.analysis`` reports: facts about converted programs, never latency.

Every plot takes one ``ProgramReport`` or a mapping ``label -> ProgramReport`` (for example
``{"reference": ..., "ANE": ...}``), draws with the book's palette (``ane_vit.plotting``),
puts units on the axes (sizes in MB = 10^6 bytes), states the finding in the title, and
writes a provenance line saying the numbers are derived from the program. Drawn for the
book's content column: a new figure is 6.9 inches wide with 12-point text, the body's size
at 100 dpi. Padded bytes are shown as two bounds (``ProgramReport.width_summary``). See
``notebooks/06_export_and_inspection.ipynb``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from ..plotting import COLORS, OKABE_ITO
from .program import ProgramReport

__all__ = [
    "plot_op_histogram",
    "plot_op_comparison",
    "plot_activation_padding",
    "plot_layout_bytes",
    "plot_findings",
    "SEVERITY_COLORS",
]

_MB = 1e6
_TEXT = 12  # points: the body text's size when a 6.9-inch figure is shown at 100 dpi
_SMALL = 12  # ticks, legends, notes: no text under the body's size
_NOTE = "Derived from the converted ML Program with ane_vit.analysis: counts and bytes, not latency."
#: Fixed colour per finding severity.
SEVERITY_COLORS = {"error": OKABE_ITO["vermillion"], "warning": OKABE_ITO["orange"], "info": OKABE_ITO["sky_blue"]}


def _axes(ax, height: float = 3.4):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.9, height))
    return ax


def _note(ax, text: str) -> None:
    """The provenance line under the plot, wrapped to the axes' width, at the small text size."""
    width = max(30, int(ax.figure.get_size_inches()[0] * ax.get_position().width * 72 / (_SMALL * 0.55)))
    ax.annotate(textwrap.fill(text, width), xy=(0, -0.2), xycoords="axes fraction", fontsize=_SMALL,
                color=COLORS["neutral"], ha="left", va="top")


def _style(ax) -> None:
    ax.tick_params(labelsize=_SMALL)
    ax.xaxis.label.set_size(_TEXT)
    ax.yaxis.label.set_size(_TEXT)


def _check_reports(reports: Mapping[str, ProgramReport]) -> None:
    if not isinstance(reports, Mapping) or not reports:
        raise TypeError(f"reports must be a non-empty mapping label -> ProgramReport, got {type(reports).__name__}")
    for label, r in reports.items():
        if not isinstance(r, ProgramReport):
            raise TypeError(f"reports[{label!r}] must be a ProgramReport, got {type(r).__name__}")


def _series_color(label: str, kinds: Mapping[str, str] | None) -> str:
    """Colour of a model: ``kinds[label]`` names a ``COLORS`` series (e.g. 'ane', 'reference')."""
    kind = (kinds or {}).get(label)
    if kind is None:
        return COLORS["neutral"]
    if kind not in COLORS:
        raise ValueError(f"kinds[{label!r}] must be one of {sorted(COLORS)}, got {kind!r}")
    return COLORS[kind]


def plot_op_histogram(report: ProgramReport, ax=None, top: int = 12, color: str = COLORS["ane"]):
    """Horizontal bars: the ``top`` most frequent op types of one program (const ops left out)."""
    if not isinstance(report, ProgramReport):
        raise TypeError(f"report must be a ProgramReport, got {type(report).__name__}")
    ax = _axes(ax, 0.9 + 0.3 * min(top, len(report.histogram())))
    common = report.histogram().most_common(top)
    if not common:
        ax.set_title("The program has no ops", fontsize=_TEXT)
        return ax
    names, counts = zip(*common)
    bars = ax.barh(range(len(names)), counts, color=color)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    for bar in bars:
        ax.annotate(f" {int(bar.get_width())}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center",
                    fontsize=_SMALL)
    ax.set_xlabel("ops in the program (count)")
    _style(ax)
    total = len(report.ops)
    ax.set_title(f"{names[0]} is the most common op: {counts[0]} of {total}", fontsize=_TEXT)
    _note(ax, _NOTE)
    return ax


def plot_op_comparison(reports: Mapping[str, ProgramReport], ax=None, top: int = 10,
                       kinds: Mapping[str, str] | None = None):
    """Grouped horizontal bars: the counts of the ``top`` op types (most frequent over all the
    programs) in each program, one bar per program. ``kinds`` as in ``plot_layout_bytes``."""
    _check_reports(reports)
    from collections import Counter

    total = sum((r.histogram() for r in reports.values()), Counter())
    types = [t for t, _ in total.most_common(top)]
    ax = _axes(ax, 1.0 + 0.22 * len(types) * len(reports))
    height = 0.8 / len(reports)
    for k, (label, report) in enumerate(reports.items()):
        hist = report.histogram()
        ys = [i + (k - (len(reports) - 1) / 2) * height for i in range(len(types))]
        ax.barh(ys, [hist[t] for t in types], height, color=_series_color(label, kinds), label=label)
    ax.set_yticks(range(len(types)), types)
    ax.invert_yaxis()
    ax.set_xlabel("ops in the program (count)")
    ax.grid(False, axis="y")
    _style(ax)
    ax.legend(fontsize=_SMALL, loc="lower right")
    differ = [t for t in types if len({r.histogram()[t] for r in reports.values()}) > 1]
    ax.set_title(f"{len(differ)} of the {len(types)} most common op types differ in count", fontsize=_TEXT)
    _note(ax, _NOTE)
    return ax


def plot_activation_padding(reports: Mapping[str, ProgramReport], ax=None):
    """Grouped bars per model: activation MB (every op output) stored densely, padded to
    64-byte rows as a lower bound (only the program's outputs padded) and as an upper bound
    (every op output padded)."""
    _check_reports(reports)
    ax = _axes(ax)
    labels = list(reports)
    sums = [reports[k].summary() for k in labels]
    series = [
        ("dense", [s["activation_bytes_dense"] / _MB for s in sums], COLORS["dense"], ""),
        ("padded, lower bound", [s["activation_bytes_padded_lower"] / _MB for s in sums], COLORS["padded"], "//"),
        ("padded, upper bound", [s["activation_bytes_padded"] / _MB for s in sums], COLORS["padded"], ""),
    ]
    w = 0.8 / len(series)
    for j, (name, values, color, hatch) in enumerate(series):
        xs = [i + (j - 1) * w for i in range(len(labels))]
        bars = ax.bar(xs, values, w, color=color, hatch=hatch, edgecolor="white" if hatch else None, label=name)
        for bar in bars:
            ax.annotate(f"{bar.get_height():.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=_SMALL - 1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("activations (MB)")
    _style(ax)
    ax.set_ylim(0, 1.35 * ax.get_ylim()[1])  # room for the legend above the bars
    ax.legend(fontsize=_SMALL, loc="upper left", ncols=2)
    growth = {k: (s["activation_bytes_padded"] / s["activation_bytes_dense"] - 1 if s["activation_bytes_dense"] else 0.0,
                  s["activation_bytes_padded_lower"] / s["activation_bytes_dense"] - 1 if s["activation_bytes_dense"] else 0.0)
              for k, s in zip(labels, sums)}
    worst = max(growth, key=lambda k: growth[k][0])
    low, high = 100 * growth[worst][1], 100 * growth[worst][0]
    ax.set_title(f"64-byte rows add {low:.{1 if low < 10 else 0}f}% to {high:.0f}%\n"
                 f"to {worst}'s activations", fontsize=_TEXT)
    _note(ax, _NOTE)
    return ax


def plot_layout_bytes(reports: Mapping[str, ProgramReport], ax=None, kinds: Mapping[str, str] | None = None):
    """Bars per model: MB written by layout ops (reshape, transpose, split, concat, ...), those
    that move the last (width) axis and those that keep it; the bar is the upper bound (every
    output padded to 64-byte rows), the black tick the lower bound (only the program's outputs
    padded); the op count is written above each bar.

    ``kinds`` maps a label to a ``COLORS`` series ('ane', 'reference', ...) so a model keeps
    its colour across the book.
    """
    _check_reports(reports)
    ax = _axes(ax)
    labels = list(reports)
    sums = [reports[k].summary() for k in labels]
    w = 0.38
    for j, (key, hatch, _name) in enumerate((("moving_width", "", "moves the last axis"), ("keeping_width", "//", "keeps it"))):
        for i, (label, s) in enumerate(zip(labels, sums)):
            x = i + (j - 0.5) * w
            upper, lower = s[f"layout_bytes_{key}_padded"] / _MB, s[f"layout_bytes_{key}_padded_lower"] / _MB
            ax.bar(x, upper, w, color=_series_color(label, kinds), hatch=hatch, edgecolor="white" if hatch else None)
            ax.plot([x - w / 2, x + w / 2], [lower] * 2, color="black", lw=2.5)
            ax.annotate(f"{s[f'layout_ops_{key}']} ops", (x, upper), ha="center", va="bottom", fontsize=_SMALL - 1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("written by layout ops (MB)")
    _style(ax)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=COLORS["neutral"], label="moves the last axis"),
               Patch(facecolor=COLORS["neutral"], hatch="//", edgecolor="white", label="keeps it"),
               ax.plot([], [], color="black", lw=2.5, label="lower bound")[0]]
    ax.set_ylim(0, 1.45 * ax.get_ylim()[1])  # the legend in one row above the bars
    ax.legend(handles=handles, fontsize=_SMALL, loc="upper left", ncols=3)
    moving = [s["layout_bytes_moving_width_padded"] for s in sums]
    most, least = labels[moving.index(max(moving))], labels[moving.index(min(moving))]
    if len(labels) > 1 and min(moving) > 0:
        ax.set_title(f"{most} writes {max(moving) / min(moving):.1f}x the\nwidth-moving layout bytes of {least}",
                     fontsize=_TEXT)
    else:
        ax.set_title(f"{most}'s layout ops move {max(moving) / _MB:.2f} MB\nalong the width", fontsize=_TEXT)
    _note(ax, _NOTE)
    return ax


def plot_findings(reports: Mapping[str, ProgramReport], ax=None):
    """Stacked bars per model: ANE-readiness findings by severity (error, warning, info)."""
    _check_reports(reports)
    ax = _axes(ax)
    labels = list(reports)
    bottom = [0] * len(labels)
    for severity, color in SEVERITY_COLORS.items():
        n = [reports[k].summary()["findings_by_severity"].get(severity, 0) for k in labels]
        ax.bar(labels, n, bottom=bottom, color=color, label=severity)
        bottom = [b + v for b, v in zip(bottom, n)]
    ax.set_ylabel("ANE-readiness findings (count)")
    _style(ax)
    ax.legend(fontsize=_SMALL)
    clean = [k for k, b in zip(labels, bottom) if b == 0]
    if len(clean) == len(labels):
        ax.set_title("No ANE-readiness findings in any program", fontsize=_TEXT)
    elif clean:
        ax.set_title(f"{', '.join(clean)}: no findings;\nothers: {max(bottom)} at most", fontsize=_TEXT)
    else:
        ax.set_title(f"Every program has findings; at most {max(bottom)}", fontsize=_TEXT)
    _note(ax, _NOTE + " Rules and sources: ane_vit/data/ane_ops.json.")
    return ax

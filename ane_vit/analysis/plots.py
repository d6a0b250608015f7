"""Plots of ``ane_vit.analysis`` reports: facts about converted programs, never latency.

Every plot takes one ``ProgramReport`` or a mapping ``label -> ProgramReport`` (for example
``{"reference": ..., "ANE": ...}``), draws with the book's palette (``ane_vit.plotting``),
puts units on the axes, states the finding in the title, and writes a provenance line
saying the numbers are derived from the program. See
``notebooks/06_export_and_inspection.ipynb``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..plotting import COLORS, OKABE_ITO, bar_labels, provenance_note
from .program import ProgramReport

__all__ = [
    "plot_op_histogram",
    "plot_activation_padding",
    "plot_layout_bytes",
    "plot_findings",
    "SEVERITY_COLORS",
]

_MIB = 1 << 20
_NOTE = "Derived from the converted ML Program with ane_vit.analysis: counts and bytes, not latency."
#: Fixed colour per finding severity.
SEVERITY_COLORS = {"error": OKABE_ITO["vermillion"], "warning": OKABE_ITO["orange"], "info": OKABE_ITO["sky_blue"]}


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


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
    ax = _axes(ax)
    common = report.histogram().most_common(top)
    if not common:
        ax.set_title("The program has no ops")
        return ax
    names, counts = zip(*common)
    bars = ax.barh(range(len(names)), counts, color=color)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    for bar in bars:
        ax.annotate(f"{int(bar.get_width())}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center", fontsize=8)
    ax.set_xlabel("ops in the program (count)")
    total = len(report.ops)
    ax.set_title(f"{names[0]} is the most common op: {counts[0]} of {total}")
    provenance_note(ax, _NOTE)
    return ax


def plot_activation_padding(reports: Mapping[str, ProgramReport], ax=None):
    """Grouped bars per model: activation MiB stored densely vs with the last axis padded to 64 B."""
    _check_reports(reports)
    ax = _axes(ax)
    labels = list(reports)
    dense = [reports[k].summary()["activation_bytes_dense"] / _MIB for k in labels]
    padded = [reports[k].summary()["activation_bytes_padded"] / _MIB for k in labels]
    x = range(len(labels))
    w = 0.38
    b1 = ax.bar([i - w / 2 for i in x], dense, w, color=COLORS["dense"], label="dense")
    b2 = ax.bar([i + w / 2 for i in x], padded, w, color=COLORS["padded"], label="last axis padded to 64 B")
    bar_labels(ax, list(b1) + list(b2), fmt="{:.2f}")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("activation bytes, all op outputs (MiB)")
    ax.legend()
    growth = {k: (p / d - 1) if d else 0.0 for k, d, p in zip(labels, dense, padded)}
    worst = max(growth, key=growth.get)
    ax.set_title(f"Padding to 64 B adds {100 * growth[worst]:.0f}% to {worst}'s activations")
    provenance_note(ax, _NOTE)
    return ax


def plot_layout_bytes(reports: Mapping[str, ProgramReport], ax=None, kinds: Mapping[str, str] | None = None):
    """Bars per model: MiB written by layout ops (reshape, transpose, split, concat, ...), padded.

    ``kinds`` maps a label to a ``COLORS`` series ('ane', 'reference', ...) so a model keeps
    its colour across the book.
    """
    _check_reports(reports)
    ax = _axes(ax)
    labels = list(reports)
    mib = [reports[k].summary()["layout_bytes_padded"] / _MIB for k in labels]
    counts = [reports[k].summary()["layout_ops"] for k in labels]
    bars = ax.bar(labels, mib, color=[_series_color(k, kinds) for k in labels])
    for bar, n in zip(bars, counts):
        ax.annotate(f"{bar.get_height():.2f} MiB\n{n} ops", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("bytes written by layout ops, padded (MiB)")
    most = labels[max(range(len(labels)), key=mib.__getitem__)]
    least = labels[min(range(len(labels)), key=mib.__getitem__)]
    if len(labels) > 1 and mib[labels.index(least)] > 0:
        ratio = mib[labels.index(most)] / mib[labels.index(least)]
        ax.set_title(f"{most} moves {ratio:.1f}x the layout bytes of {least}")
    else:
        ax.set_title(f"{most}'s layout ops move {mib[labels.index(most)]:.2f} MiB")
    provenance_note(ax, _NOTE)
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
    ax.legend()
    clean = [k for k, b in zip(labels, bottom) if b == 0]
    if len(clean) == len(labels):
        ax.set_title("No ANE-readiness findings in any program")
    elif clean:
        ax.set_title(f"{', '.join(clean)}: no findings; others: {max(bottom)} at most")
    else:
        ax.set_title(f"Every program has findings; at most {max(bottom)}")
    provenance_note(ax, _NOTE + " Rules and sources: ane_vit/data/ane_ops.json.")
    return ax

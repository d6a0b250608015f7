"""Size against quality of compressed programs, with the Pareto front (``ane_vit.plotting`` style).

Used by ``notebooks/08_real_data_and_compression.ipynb`` on the rows of
``results/digits.json`` (accuracy) and ``results/compression_tiny_moat.json`` (PSNR).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pareto_front", "plot_size_vs_quality"]

_FAMILY_COLORS = {"palettize": "ane", "palettize-grouped": "dense", "int8": "cpu", "int4-block": "padded",
                  "prune": "reference", "prune-n:m": "third_party", "w8a8": "published", "none": "neutral"}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: smaller size and at least the quality, sorted by size.

    ``points`` are ``(size, quality)``, larger quality better.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_size_vs_quality(ax, rows: Sequence[dict], quality: str, label: str, note: str) -> list[int]:
    """Scatter each row's ``bytes`` (kB) against ``row[quality]``, coloured by method; line through the front.

    Returns the indices of the rows on the Pareto front.
    """
    from ..plotting import COLORS, provenance_note

    points = [(r["bytes"] / 1e3, r[quality]) for r in rows]
    for r, (size, q) in zip(rows, points):
        family = r.get("family", r.get("method", "none"))
        ax.scatter(size, q, color=COLORS[_FAMILY_COLORS.get(family, "neutral")], zorder=3)
        ax.annotate(r["label"], (size, q), textcoords="offset points", xytext=(4, 3), fontsize=7)
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color=COLORS["neutral"], lw=1, ls="--",
            label="Pareto front", zorder=2)
    ax.set(xlabel="program size on disk (kB)", ylabel=label)
    ax.legend(loc="lower right")
    provenance_note(ax, note)
    return front

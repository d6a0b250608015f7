"""Size against quality of compressed programs, with the Pareto front (``ane_vit.plotting`` style).

Used by ``notebooks/08_real_data_and_compression.ipynb`` on the rows of
``results/digits.json`` (accuracy) and ``results/compression_tiny_moat.json`` (PSNR).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["FAMILY_LABELS", "pareto_front", "plot_size_vs_quality"]

#: One Okabe-Ito colour per method family (the palette's purple stays reserved for published figures).
_FAMILY_COLORS = {"palettize": "blue", "palettize-grouped": "sky_blue", "int8": "bluish_green", "int4-block": "orange",
                  "prune": "vermillion", "prune-n:m": "yellow", "w8a8": "black", "none": None}


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


#: Legend text per method family.
FAMILY_LABELS = {"none": "float16", "palettize": "palettize, per tensor", "palettize-grouped": "palettize, grouped (iOS18)",
                 "int8": "int8 weights", "int4-block": "int4 blocks (iOS18)", "prune": "magnitude pruning",
                 "prune-n:m": "2:4 pruning", "w8a8": "W8A8 (iOS17)"}


def plot_size_vs_quality(ax, rows: Sequence[dict], quality: str, label: str, note: str) -> list[int]:
    """Scatter each row's ``bytes`` (kB) against ``row[quality]``, coloured by method family.

    Each row needs ``bytes``, ``quality``, ``family`` (a key of ``FAMILY_LABELS``) and a short
    ``label``; only the points on the Pareto front are labelled, joined by a dashed line.
    Returns the indices of the rows on the front.
    """
    from ..plotting import COLORS, OKABE_ITO, provenance_note

    points = [(r["bytes"] / 1e3, r[quality]) for r in rows]
    seen = set()
    for r, (size, q) in zip(rows, points):
        family = r.get("family", "none")
        name = None if family in seen else FAMILY_LABELS.get(family, family)
        seen.add(family)
        color = OKABE_ITO.get(_FAMILY_COLORS.get(family) or "", COLORS["neutral"])
        ax.scatter(size, q, color=color, edgecolors="#333333", linewidths=0.5, zorder=3, label=name)
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color=COLORS["neutral"], lw=1, ls="--",
            label="Pareto front", zorder=2)
    for k, i in enumerate(front):
        ax.annotate(rows[i]["label"], points[i], textcoords="offset points", xytext=(5, -10 if k % 2 else 4), fontsize=7)
    ax.set(xlabel="program size on disk (kB)", ylabel=label)
    ax.legend(loc="lower right", fontsize=7)
    provenance_note(ax, note)
    return front

"""Size against quality of compressed programs, with the Pareto front (``ane_vit.plotting`` style).

Used by ``notebooks/08_real_data_and_compression.ipynb`` on the rows of ``results/digits.json``
(accuracy, with its 95 % interval) and ``results/compression_tiny_moat.json`` (PSNR). Figures
are drawn for the book's content column (6.9 in at 100 dpi, shown 1:1 at 1280 px) with text of
at least 11 pt; every point is labelled, and ``place_labels`` moves labels until none overlaps
another label, a marker or an error bar (leader lines join the ones placed far away). Sizes
are in MB = 10^6 bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["FAMILY_LABELS", "pareto_front", "place_labels", "rail_labels", "plot_size_vs_quality", "plot_size_vs_accuracy"]

#: One Okabe-Ito colour per method family (the palette's purple stays reserved for published figures).
_FAMILY_COLORS = {"palettize": "blue", "palettize-grouped": "sky_blue", "int8": "bluish_green", "int4-block": "orange",
                  "prune": "vermillion", "prune-n:m": "yellow", "w8a8": "black", "none": None}
#: Text size (points) of every label, tick and legend: the book's body size at 100 dpi.
FONT_SIZE = 11
#: Width of a figure drawn for the content column (inches at 100 dpi).
COLUMN_WIDTH = 6.9


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


def _color(family: str) -> str:
    from ..plotting import COLORS, OKABE_ITO

    return OKABE_ITO.get(_FAMILY_COLORS.get(family) or "", COLORS["neutral"])


def _area(a, b) -> float:
    """Overlap area of two boxes ``(x0, y0, x1, y1)``."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _leader_hits(point, box, boxes, samples: int = 24) -> int:
    """How many of ``boxes`` (``(x0, y0, x1, y1)``) the segment from ``point`` to the centre of ``box`` crosses (sampled)."""
    x0, y0 = point
    x1, y1 = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hit = set()
    for k in range(2, samples):  # skip the end at the point itself (its own marker)
        x, y = x0 + (x1 - x0) * k / samples, y0 + (y1 - y0) * k / samples
        if box[0] <= x <= box[2] and box[1] <= y <= box[3]:
            break
        for j, b in enumerate(boxes):
            if b[0] <= x <= b[2] and b[1] <= y <= b[3]:
                hit.add(j)
    return len(hit)


def _candidates():
    """Offsets (points) to try, nearest first; angles start to the right and go round."""
    angles = (0, 180, 30, 150, -30, -150, 60, 120, -60, -120, 90, -90, 15, 165, -15, -165, 45, 135, -45, -135,
              75, 105, -75, -105)
    for r in (7, 13, 20, 28, 38, 50, 64, 80, 98, 118, 140):
        for a in angles:
            yield r, r * math.cos(math.radians(a)), r * math.sin(math.radians(a))


def place_labels(ax, xy: Sequence[tuple[float, float]], texts: Sequence[str], obstacles: Sequence = (),
                 fontsize: float = FONT_SIZE, avoid: Sequence = ()) -> list:
    """Label every point ``xy[i]`` (data coordinates) with ``texts[i]``, no two labels overlapping.

    Greedy: for each point, the nearest offset whose text box stays inside the axes and clears
    every placed label, every marker and each box of ``obstacles`` (display-space ``Bbox`` es,
    one per point, e.g. its error bar) wins; a leader line (for labels placed farther than 12
    points) must not cross another marker or label either (it may run along its own error bar).
    ``avoid``: more display-space boxes no label may cover (a legend). If no offset is free, the one with the
    least overlap is used. Call it after the axes limits are final. Returns the
    ``Annotation`` objects, in the order of ``xy``.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()  # text extents need one; positions and limits are known already
    inside = ax.get_window_extent(renderer)
    px = ax.transData.transform(xy) if len(xy) else []
    scale = fig.dpi / 72.0  # display pixels per point
    markers = [(x - 5 * scale, y - 5 * scale, x + 5 * scale, y + 5 * scale) for x, y in px]
    taken = markers + [(b.x0, b.y0, b.x1, b.y1) for b in [*obstacles, *avoid]]  # (x0, y0, x1, y1), display space
    frame = (inside.x0, inside.y0, inside.x1, inside.y1)
    out = []
    for i, ((x, y), text) in enumerate(zip(xy, texts)):
        probe = ax.text(0, 0, text, fontsize=fontsize)  # measured once; candidate boxes are then arithmetic
        size = probe.get_window_extent(renderer)
        probe.remove()
        w, h, pad = size.width, size.height, 3.0  # keep labels at least 2 * pad pixels apart
        others = [b for j, b in enumerate(taken) if j != i]  # every box but the point's own marker
        crossing = [b for j, b in enumerate(taken) if j != i and j != len(markers) + i]  # nor its own bar
        best = None
        for r, dx, dy in _candidates():
            ha = "left" if dx > 2 else "right" if dx < -2 else "center"
            va = "bottom" if dy > 2 else "top" if dy < -2 else "center"
            ax_, ay_ = px[i][0] + dx * scale, px[i][1] + dy * scale
            x0 = ax_ if ha == "left" else ax_ - w if ha == "right" else ax_ - w / 2
            y0 = ay_ if va == "bottom" else ay_ - h if va == "top" else ay_ - h / 2
            box = (x0 - pad, y0 - pad, x0 + w + pad, y0 + h + pad)
            fits = frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] and box[3] <= frame[3]
            clash = sum(_area(box, b) for b in others)
            if fits and clash == 0 and r > 12:  # a leader line must not run through another marker or label
                clash = 50.0 * _leader_hits(px[i], box, crossing)
            score = (0 if fits else 1, clash, r)
            if best is None or score < best[0]:
                best = (score, box, r, dx, dy, ha, va)
            if fits and clash == 0:
                break
        _, box, r, dx, dy, ha, va = best
        arrow = dict(arrowstyle="-", lw=0.6, color="#555555", shrinkA=1, shrinkB=3) if r > 12 else None
        out.append(ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize=fontsize, zorder=5, arrowprops=arrow))
        taken.append(box)
    return out


def rail_labels(ax, xy: Sequence[tuple[float, float]], texts: Sequence[str], gap: float = 8.0,
                fontsize: float = FONT_SIZE) -> list:
    """Label a crowd of points on two rails, one along the top of the axes and one along the bottom.

    Points sorted by x go alternately to the top and the bottom rail; on each rail the labels
    keep the points' order and are pushed apart until ``gap`` pixels separate them (a 1-D
    packing), so leader lines never cross one another. Leave room: the rails take one line of
    text at the top and at the bottom of the axes. Returns the ``Annotation`` objects in the
    order of ``xy``.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    scale = fig.dpi / 72.0
    px = ax.transData.transform(xy) if len(xy) else []
    widths, height = [], 0.0
    for text in texts:
        probe = ax.text(0, 0, text, fontsize=fontsize)
        box = probe.get_window_extent(renderer)
        probe.remove()
        widths.append(box.width)
        height = max(height, box.height)
    order = sorted(range(len(xy)), key=lambda i: px[i][0])
    out = [None] * len(xy)
    for rail, members in (("top", order[0::2]), ("bottom", order[1::2])):
        lo, hi = inside.x0 + 4, inside.x1 - 4
        centers = [min(max(px[i][0], lo + widths[i] / 2), hi - widths[i] / 2) for i in members]
        for _ in range(len(members) + 1):  # push right, then pull back inside, until stable
            for k in range(1, len(members)):
                need = (widths[members[k - 1]] + widths[members[k]]) / 2 + gap
                centers[k] = max(centers[k], centers[k - 1] + need)
            if members:
                centers[-1] = min(centers[-1], hi - widths[members[-1]] / 2)
            for k in range(len(members) - 2, -1, -1):
                need = (widths[members[k]] + widths[members[k + 1]]) / 2 + gap
                centers[k] = min(centers[k], centers[k + 1] - need)
            if members:
                centers[0] = max(centers[0], lo + widths[members[0]] / 2)
        y = inside.y1 - 4 if rail == "top" else inside.y0 + 4
        va = "top" if rail == "top" else "bottom"
        for i, c in zip(members, centers):
            dx, dy = (c - px[i][0]) / scale, (y - px[i][1]) / scale
            out[i] = ax.annotate(texts[i], xy[i], xytext=(dx, dy), textcoords="offset points", ha="center", va=va,
                                 fontsize=fontsize, zorder=5,
                                 arrowprops=dict(arrowstyle="-", lw=0.6, color="#555555", shrinkA=1, shrinkB=4))
    return out


def plot_size_vs_quality(ax, rows: Sequence[dict], quality: str, label: str, note: str) -> list[int]:
    """Scatter each row's ``bytes`` (MB) against ``row[quality]``, coloured by method family, every point labelled.

    Each row needs ``bytes``, ``quality``, ``family`` (a key of ``FAMILY_LABELS``) and a short
    ``label``; the Pareto front is joined by a dashed line. Returns the indices of the rows on
    the front.
    """
    from ..plotting import COLORS

    points = [(r["bytes"] / 1e6, r[quality]) for r in rows]
    seen = set()
    for r, (size, q) in zip(rows, points):
        family = r.get("family", "none")
        name = None if family in seen else FAMILY_LABELS.get(family, family)
        seen.add(family)
        ax.scatter(size, q, color=_color(family), edgecolors="#333333", linewidths=0.5, zorder=3, label=name, s=36)
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color=COLORS["neutral"], lw=1, ls="--",
            label="Pareto front", zorder=2)
    ax.set_xlabel("program size on disk (MB = 10^6 bytes)", fontsize=FONT_SIZE)
    ax.set_ylabel(label, fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE)
    legend = ax.legend(loc="upper left", fontsize=FONT_SIZE - 1)  # small and good is empty: nothing is both
    place_labels(ax, points, [r["label"] for r in rows], avoid=[legend.get_window_extent(ax.figure.canvas.get_renderer())])
    ax.annotate(note, xy=(0, -0.16), xycoords="axes fraction", fontsize=FONT_SIZE - 1, color=COLORS["neutral"],
                ha="left", va="top")
    return front


def plot_size_vs_accuracy(rows: Sequence[dict], zoom: tuple[float, float] | None = None,
                          low: tuple[float, float] = (0.0, 75.0), note: str = "", title: str = ""):
    """Digits accuracy (%) against program size (MB) with 95 % intervals, on two stacked panels.

    The top panel zooms on ``zoom`` (where the useful programs are), the bottom one shows the
    failures in ``low``; a point is drawn in the panel its accuracy falls in, with its interval
    as an error bar. ``zoom=None`` spans the intervals of the points above 90 %. Each row needs ``bytes``, ``accuracy`` (0..1), ``ci`` (low, high in 0..1),
    ``label``, ``family``; ``fine_tuned=True`` draws a diamond. Every point is labelled.

    Returns ``(fig, front, labels)``: the figure, the indices of the rows on the Pareto front
    (size against accuracy) and the label ``Annotation`` objects.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.transforms import Bbox

    from ..plotting import COLORS

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(COLUMN_WIDTH, 8.0), sharex=True,
                                      gridspec_kw={"height_ratios": [3.6, 1.5], "hspace": 0.08})
    pts = [(r["bytes"] / 1e6, 100 * r["accuracy"]) for r in rows]
    front = pareto_front(pts)
    if zoom is None:
        good = [100 * r["ci"][0] for r in rows if r["accuracy"] >= 0.9] or [90.0]
        lowest = min(good)
        zoom = (lowest - 0.12 * (100 - lowest) - 0.25, 100 + 0.12 * (100 - lowest) + 0.25)  # rails of labels above and below
    panels = {"top": [], "bottom": []}
    for i, (_x, y) in enumerate(pts):
        panels["top" if y >= zoom[0] else "bottom"].append(i)
    xs = [p[0] for p in pts]
    span = max(xs) - min(xs)
    for ax, (lo, hi) in ((top, zoom), (bottom, low)):
        ax.set_ylim(lo, hi)
        ax.set_xlim(min(xs) - 0.08 * span, max(xs) + 0.08 * span)
        ax.tick_params(labelsize=FONT_SIZE)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color=COLORS["neutral"], lw=1, ls="--", zorder=2)
    for name, ax in (("top", top), ("bottom", bottom)):
        for i in panels[name]:
            r, (x, y) = rows[i], pts[i]
            lo, hi = 100 * r["ci"][0], 100 * r["ci"][1]
            ax.errorbar(x, y, yerr=[[y - lo], [hi - y]], fmt="none", ecolor=_color(r.get("family", "none")), elinewidth=1.0,
                        capsize=3, zorder=3, alpha=0.6)
            ax.scatter(x, y, marker="D" if r.get("fine_tuned") else "o", s=46, color=_color(r.get("family", "none")),
                       edgecolors="#222222", linewidths=0.7, zorder=4)
    top.spines["bottom"].set_visible(False)
    bottom.spines["top"].set_visible(True)
    top.tick_params(bottom=False)
    d = 0.012  # the cut marks of a broken axis
    for ax, y0 in ((top, 0), (bottom, 1)):
        ax.plot((-d, d), (y0 - d * 2, y0 + d * 2), transform=ax.transAxes, color="k", clip_on=False, lw=1)
    top.set_yticks([t for t in top.get_yticks() if zoom[0] <= t <= 100])  # no tick above 100 %
    top.set_ylabel("test accuracy (%), zoomed", fontsize=FONT_SIZE)
    bottom.set_ylabel("accuracy (%)", fontsize=FONT_SIZE)
    bottom.set_xlabel("program size on disk (MB = 10^6 bytes)", fontsize=FONT_SIZE)
    if title:
        top.set_title(title, fontsize=FONT_SIZE + 1)
    families = []
    for r in rows:
        if r.get("family", "none") not in families:
            families.append(r.get("family", "none"))
    handles = [Line2D([], [], marker="o", ls="", color=_color(f), markeredgecolor="#222222", label=FAMILY_LABELS.get(f, f))
               for f in families]
    if any(r.get("fine_tuned") for r in rows):
        handles.append(Line2D([], [], marker="D", ls="", color="white", markeredgecolor="#222222", label="fine-tuned"))
    handles.append(Line2D([], [], color=COLORS["neutral"], ls="--", label="Pareto front"))
    handles.append(Line2D([], [], color="#555555", marker="|", ls="", markersize=12, label="95 % interval (Wilson)"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.035), ncol=3, fontsize=FONT_SIZE - 1,
               frameon=False)
    if note:
        fig.text(0.0, -0.13, note, fontsize=FONT_SIZE - 1, color=COLORS["neutral"], ha="left", va="top", wrap=True)
    labels = [None] * len(rows)
    for name, ax in (("top", top), ("bottom", bottom)):
        idx = panels[name]
        bars = []
        for i in idx:  # each error bar as an obstacle (display space), a little wider than the line
            x, _ = ax.transData.transform(pts[i])
            _, y0 = ax.transData.transform((pts[i][0], max(100 * rows[i]["ci"][0], ax.get_ylim()[0])))
            _, y1 = ax.transData.transform((pts[i][0], min(100 * rows[i]["ci"][1], ax.get_ylim()[1])))
            bars.append(Bbox.from_extents(x - 4, y0, x + 4, y1))
        texts = [rows[i]["label"] for i in idx]
        if ax is top and len(idx) > 6:  # the crowd at the top: labels on rails, leaders never crossing
            placed = rail_labels(ax, [pts[i] for i in idx], texts)
        else:
            placed = place_labels(ax, [pts[i] for i in idx], texts, obstacles=bars)
        for i, t in zip(idx, placed):
            labels[i] = t
    return fig, front, labels

"""ane_vit.compress.plots: every point labelled, no two labels overlapping, the broken axis and the front."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from ane_vit.compress.plots import pareto_front, place_labels, plot_size_vs_accuracy  # noqa: E402
from ane_vit.stats import wilson_interval  # noqa: E402


def _boxes(fig, labels):
    renderer = fig.canvas.get_renderer()
    out = []
    for t in labels:
        t.update_positions(renderer)
        out.append(Text.get_window_extent(t, renderer))
    return out


def _disjoint(boxes):
    return all(not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)
               for i, a in enumerate(boxes) for b in boxes[i + 1:])


# chapter 8's crowd: a dozen programs within 0.3 MB and 0.6 points of each other, a few failures
_ROWS = [(661569, 359, "float16", "none"), (423244, 359, "8-bit", "palettize"), (348388, 359, "6-bit", "palettize"),
         (282210, 358, "4-bit", "palettize"), (287340, 359, "4-bit g16", "palettize-grouped"),
         (420190, 359, "int8", "int8"), (305400, 359, "int4 b32", "int4-block"), (480274, 360, "W8A8", "w8a8"),
         (249708, 359, "4-bit all", "palettize"), (397322, 359, "int8 all", "int8"),
         (200162, 359, "2-bit FT", "palettize"), (428741, 358, "50 % FT", "prune"), (433758, 357, "2:4 FT", "prune-n:m"),
         (213705, 224, "2-bit", "palettize"), (181467, 35, "1-bit", "palettize"), (441996, 75, "prune 50 %", "prune"),
         (313096, 35, "prune 75 %", "prune"), (447223, 70, "2:4", "prune-n:m")]


@pytest.fixture(scope="module")
def figure():
    rows = [dict(bytes=b, accuracy=k / 360, ci=wilson_interval(k, 360), label=label, family=family,
                 fine_tuned=label.endswith("FT")) for b, k, label, family in _ROWS]
    fig, front, labels = plot_size_vs_accuracy(rows, note="test", title="test")
    yield fig, front, labels, rows
    plt.close(fig)


def test_every_point_is_labelled_once_without_overlap(figure):
    fig, _, labels, rows = figure
    assert [t.get_text() for t in labels] == [r["label"] for r in rows]
    for ax in fig.axes:
        mine = [t for t in labels if t.axes is ax]
        boxes = _boxes(fig, mine)
        assert _disjoint(boxes), [t.get_text() for t in mine]
        inside = ax.get_window_extent(fig.canvas.get_renderer())
        assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1 for b in boxes)


def test_points_go_to_the_panel_of_their_accuracy_and_the_zoom_covers_the_intervals(figure):
    fig, front, labels, rows = figure
    top, bottom = fig.axes[:2]
    assert {t.get_text() for t in labels if t.axes is bottom} == {"2-bit", "1-bit", "prune 50 %", "prune 75 %", "2:4"}
    lo, hi = top.get_ylim()
    assert lo <= min(100 * r["ci"][0] for r in rows if r["accuracy"] > 0.9) and hi >= 100
    assert front == pareto_front([(r["bytes"] / 1e6, 100 * r["accuracy"]) for r in rows])
    assert [rows[i]["label"] for i in front] == ["1-bit", "2-bit FT", "W8A8"]


def test_text_is_at_least_body_size(figure):
    fig, _, labels, _ = figure
    assert min(t.get_fontsize() for t in labels) >= 11
    for ax in fig.axes[:2]:
        assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 11
    assert fig.get_size_inches()[0] <= 7.0  # drawn for the content column, shown 1:1 at 100 dpi


def test_place_labels_falls_back_but_still_labels_an_impossible_crowd():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    texts = place_labels(ax, [(0.5, 0.5)] * 6, [f"label {i}" for i in range(6)])
    assert len(texts) == 6 and all(t.axes is ax for t in texts)
    plt.close(fig)

"""One plot style for the book: the Okabe-Ito palette with a fixed meaning per series.

Series keep their colour across chapters: the reference implementation is always
``COLORS["reference"]``, the ANE-optimised one ``COLORS["ane"]``, the original repository's
programs (apple/ml-vision-transformers-ane, recorded in ``results/``) ``COLORS["original"]``
with ``HATCHES["recorded"]``, a published figure ``COLORS["published"]``. Measured, published and derived numbers are never mixed in one
plot without a label saying which is which (see ``provenance_note``).
"""

from __future__ import annotations

__all__ = ["OKABE_ITO", "COLORS", "HATCHES", "apply_style", "provenance_note", "bar_labels"]

#: Okabe & Ito (2008), a palette distinguishable under the common colour-vision deficiencies.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: Fixed meaning per series, across the whole book.
COLORS = {
    "reference": OKABE_ITO["vermillion"],
    "ane": OKABE_ITO["blue"],
    "naive": OKABE_ITO["vermillion"],
    "padded": OKABE_ITO["orange"],
    "dense": OKABE_ITO["sky_blue"],
    "cpu": OKABE_ITO["bluish_green"],
    "neural_engine": OKABE_ITO["blue"],
    "published": OKABE_ITO["reddish_purple"],
    "third_party": OKABE_ITO["orange"],
    "original": OKABE_ITO["bluish_green"],
    "neutral": "#555555",
}

#: Hatching that marks the provenance of a bar (measured here, published, or derived).
HATCHES = {"measured": "", "published": "//", "derived": "..", "recorded": "xx"}


def apply_style() -> None:
    """Set the book's matplotlib defaults (called by ``ane_vit.notebook.setup``)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "axes.prop_cycle": cycler(color=[OKABE_ITO[k] for k in ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue", "yellow", "black")]),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.titlesize": 11,
            "axes.titleweight": "bold",
            "legend.frameon": False,
            "image.cmap": "viridis",
        }
    )


def provenance_note(ax, text: str) -> None:
    """Write a small provenance line (what was measured where, or the citation) under a plot."""
    ax.annotate(text, xy=(0, -0.22), xycoords="axes fraction", fontsize=7, color=COLORS["neutral"], ha="left", va="top")


def bar_labels(ax, bars, fmt: str = "{:.3g}") -> None:
    """Write each bar's value above it."""
    for bar in bars:
        height = bar.get_height()
        ax.annotate(fmt.format(height), (bar.get_x() + bar.get_width() / 2, height), ha="center", va="bottom", fontsize=8)

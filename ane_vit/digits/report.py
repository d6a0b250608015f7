"""Chapter 8's tables: every evaluated row with its 95 % interval and an exact paired test against a baseline.

The rows of ``results/digits.json``, ``digits_finetune.json`` and ``digits_threshold.json``
carry each image's predicted label (``labels``, one character per image), so the statistics
are recomputed from the records, never typed: ``with_statistics`` adds to each row its
correct count, the Wilson interval of its accuracy and the exact McNemar test against the
baseline's labels on the same images (``ane_vit.stats``). ``short_label`` gives the short
names the plots use.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..stats import mcnemar_exact, wilson_interval

__all__ = ["short_label", "decode_labels", "with_statistics"]

_SHORT = {
    "program fp16 (iOS16), interpreted": "float16",
    "program palettize 4 bit, groups of 16": "4-bit g16",
    "program int8 per channel": "int8",
    "program int4 blocks of 32": "int4 b32",
    "program prune 2:4": "2:4",
    "program W8A8, calibrated on 160 training images": "W8A8",
    "program palettize 4 bit, every constant": "4-bit all",
    "program int8 per channel, every constant": "int8 all",
    "program prune 50 %, fine-tuned": "50 % FT",
    "program prune 2:4, fine-tuned": "2:4 FT",
    "program palettize 2 bit, fine-tuned": "2-bit FT",
}


def short_label(stage: str) -> str:
    """A plot label for a stage name: ``"program palettize 4 bit"`` -> ``"4-bit"``, fine-tuned rows end in ``FT``."""
    if stage in _SHORT:
        return _SHORT[stage]
    name = stage.removeprefix("program ")
    if name.startswith("palettize ") and name.endswith(" bit"):
        return f"{name.split()[1]}-bit"
    return name


def decode_labels(text: str) -> list[int]:
    """The per-image labels of a row (``"0371..."``) as a list of ints.

    Raises:
        ValueError: if ``text`` is not a string of digits 0..9.
    """
    if not isinstance(text, str) or not text.isdigit():
        raise ValueError(f"labels must be a string of digits 0..9, one per image, got {str(text)[:20]!r}")
    return [int(ch) for ch in text]


def with_statistics(rows: Sequence[dict], truth: str, baseline: str, confidence: float = 0.95) -> list[dict]:
    """Copies of ``rows`` with ``correct``, ``n``, ``ci`` (Wilson) and ``b``, ``c``, ``p_value`` against ``baseline``.

    ``truth`` and ``baseline`` are label strings (the split's true labels and, e.g., the float16
    program's predictions); ``b`` counts images right under the baseline only, ``c`` those
    right under the row only (exact McNemar, ``ane_vit.stats.mcnemar_exact``).

    Raises:
        ValueError: if a row's labels do not cover the same images as ``truth``.
    """
    y, base = decode_labels(truth), decode_labels(baseline)
    if len(base) != len(y):
        raise ValueError(f"baseline has {len(base)} labels, truth {len(y)}")
    out = []
    for r in rows:
        pred = decode_labels(r["labels"])
        if len(pred) != len(y):
            raise ValueError(f"{r.get('stage', r.get('program', '?'))}: {len(pred)} labels for {len(y)} images")
        correct = sum(p == t for p, t in zip(pred, y))
        b = sum(1 for p, q, t in zip(base, pred, y) if p == t and q != t)
        c = sum(1 for p, q, t in zip(base, pred, y) if p != t and q == t)
        out.append(dict(r, correct=correct, n=len(y), ci=wilson_interval(correct, len(y), confidence), b=b, c=c,
                        p_value=mcnemar_exact(b, c)))
    return out

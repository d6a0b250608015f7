"""The one rule for integer sizes and boolean flags in every public argument of ``ane_vit``.

A size (a channel count, a head count, a window side, an image side, a block count) is a
positive ``int``; a flag is a ``bool``. Nothing is converted silently: ``int(7.9)`` would
build a 7-pixel window where the caller asked for 7.9, and ``bool("False")`` is ``True``.

* ``positive_int``: a Python ``int`` or a numpy integer (``np.int64`` from an array) > 0.
  Rejected with ``TypeError``: ``bool`` (``True`` is an ``int`` in Python, never a size),
  ``float`` (even ``8.0``), numpy floats, strings, tensors, ``None``. Rejected with
  ``ValueError``: zero and negatives.
* ``positive_ints``: a sequence (tuple, list, ``torch.Size``) of a fixed number of those.
* ``flag``: ``True`` or ``False`` (or a numpy bool), nothing else.

Wrong type -> ``TypeError``, right type but out of range or wrong length -> ``ValueError``;
each message names the argument, what was expected and what was got.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["positive_int", "positive_ints", "flag"]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def positive_int(value: Any, name: str, *, or_none: str | None = None) -> int | None:
    """``value`` as a Python ``int`` if it is an integer > 0; else a ``TypeError``/``ValueError``
    naming ``name``, the expected and the actual value.

    ``or_none``: also accept ``None`` (returned as is); the text says what ``None`` means,
    e.g. ``"for features"`` gives ``num_classes must be a positive int, or None for features``.
    """
    if or_none is not None:
        if value is None:
            return None
        expected = f"a positive int, or None{' ' + or_none if or_none else ''};"
    else:
        expected = "a positive int,"
    if not _is_int(value):
        raise TypeError(f"{name} must be {expected} got {_got(value)}")
    if value <= 0:
        raise ValueError(f"{name} must be {expected} got {value!r}")
    return int(value)


def positive_ints(values: Any, name: str, length: int, form: str = "", *, expected: str | None = None) -> tuple[int, ...]:
    """``values`` as a tuple of ``length`` positive ints (``form`` names them, e.g. ``"(wh, ww)"``).

    ``expected`` replaces the generated description of what is allowed in the messages.

    Raises:
        TypeError: if ``values`` is not a sequence or an entry is not an int (a float, a bool...).
        ValueError: for a wrong length or an entry <= 0.
    """
    if expected is None:
        form = f" {form}" if form else ""
        expected = f"a pair{form} of positive ints" if length == 2 else f"{length} positive ints{form}"
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be {expected}, got {_got(values)}")
    values = tuple(values)
    if len(values) != length:
        raise ValueError(f"{name} must be {expected}, got {values!r} ({len(values)} {'entry' if len(values) == 1 else 'entries'})")
    for v in values:
        if not _is_int(v):
            raise TypeError(f"{name} must be {expected}, got {values!r}: {_got(v)} is not an int")
    bad = [v for v in values if v <= 0]
    if bad:
        raise ValueError(f"{name} must be {expected}, got {values!r}: {bad[0]!r} is not positive")
    return tuple(int(v) for v in values)


def flag(value: Any, name: str) -> bool:
    """``value`` if it is a ``bool`` (or a numpy bool); else a ``TypeError`` naming ``name``.
    A string such as ``"False"`` is refused: ``bool("False")`` is ``True``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_got(value)}")
    return bool(value)

"""Honest accuracy statistics for small test sets: intervals for one proportion, exact paired tests.

On the 360 test images of chapter 8 one image is 0.28 points, so two programs that differ by
one or two images cannot be told apart. This module gives each accuracy its 95 % interval and
compares two classifiers evaluated *on the same images* by an exact paired test:

* ``wilson_interval``: the score interval of Wilson (1927), closed form, good coverage even at
  0 or n successes (Newcombe 1998 compares seven methods and recommends it);
* ``exact_interval``: the Clopper-Pearson (1934) interval from the binomial tails
  (conservative: coverage at least the nominal level);
* ``mcnemar_exact``: McNemar's test in its exact form: only the images on which the two
  classifiers disagree about being right carry information (``b`` right by A only, ``c`` by B
  only); under "equally accurate" each such image is a fair coin, so the two-sided p-value is
  the binomial tail ``2 P(X <= min(b, c))``, ``X ~ Binomial(b + c, 1/2)``, capped at 1;
* ``discordant_pairs`` and ``paired_comparison`` count ``b`` and ``c`` from predicted labels;
* ``min_discordant_for_significance``: how lopsided the disagreement must be before the exact
  test can reject at all (6 to 0 at 5 %): the resolution of a paired comparison.

Only the standard library (``math``, ``statistics``); no SciPy. See
``notebooks/08_real_data_and_compression.ipynb``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

__all__ = [
    "wilson_interval",
    "exact_interval",
    "binomial_cdf",
    "mcnemar_exact",
    "discordant_pairs",
    "paired_comparison",
    "min_discordant_for_significance",
]


def _check_counts(k, n) -> None:
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in 0..n = 0..{n}, got {k}")


def _check_confidence(confidence) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number strictly between 0 and 1, got {confidence!r}")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n``; returns ``(low, high)`` in [0, 1].

    ``center = (k + z^2/2) / (n + z^2)``, ``half = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4)``,
    with ``z`` the two-sided normal quantile of ``confidence`` (1.95996 at 95 %).

    Raises:
        TypeError: ``k`` or ``n`` not an int.
        ValueError: ``n < 1``, ``k`` outside ``0..n``, or ``confidence`` outside the open
            interval from 0 to 1.
    """
    _check_counts(k, n)
    _check_confidence(confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    z2 = z * z
    center = (k + z2 / 2) / (n + z2)
    half = z / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4)
    # At k = 0 (k = n) the low (high) end is exactly 0 (1); round-off must not push it past.
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == n else min(1.0, center + half)
    return low, high


def _log_pmf(i: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``; exact sums (integers) for ``p = 1/2``, log-space otherwise."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    if p == 0.5:
        return sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # exact integers, one rounding
    terms = [_log_pmf(i, n, p) for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _solve(f, target: float) -> float:
    """The p in (0, 1) where the decreasing function ``f`` crosses ``target`` (bisection to 1e-15)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return (lo + hi) / 2


def exact_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson ("exact binomial") interval for ``k / n``; returns ``(low, high)``.

    ``low`` solves ``P(X >= k | p) = alpha/2`` and ``high`` solves ``P(X <= k | p) = alpha/2``
    (``alpha = 1 - confidence``); ``low = 0`` at ``k = 0`` and ``high = 1`` at ``k = n``.

    Raises:
        TypeError: as ``wilson_interval``.
        ValueError: as ``wilson_interval``.
    """
    _check_counts(k, n)
    _check_confidence(confidence)
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else 1 - _solve(lambda p: binomial_cdf(n - k, n, p), tail)  # symmetry: X >= k <=> n - X <= n - k
    high = 1.0 if k == n else _solve(lambda p: binomial_cdf(k, n, p), tail)
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``.

    ``b``: images right under A only; ``c``: right under B only. Under the hypothesis that A and
    B are equally accurate, each discordant image is a fair coin: ``p = min(1, 2 P(X <= min(b, c)))``
    with ``X ~ Binomial(b + c, 1/2)``; ``p = 1`` when there is no discordant image.

    Raises:
        TypeError: a count that is not an int.
        ValueError: a negative count.
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf(min(b, c), n, 0.5))


def _labels(values, name: str) -> list[int]:
    try:
        out = [int(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of integer labels, got {type(values).__name__}") from None
    return out


def discordant_pairs(labels_a: Sequence[int], labels_b: Sequence[int], truth: Sequence[int]) -> tuple[int, int]:
    """``(b, c)``: images right under A and wrong under B, and the reverse (same images, same order).

    Shapes: three label sequences of one length ``N`` (lists, numpy arrays or tensors).

    Raises:
        ValueError: if the lengths differ or are 0.
    """
    a, bb, y = _labels(labels_a, "labels_a"), _labels(labels_b, "labels_b"), _labels(truth, "truth")
    if not (len(a) == len(bb) == len(y)) or not y:
        raise ValueError(f"labels_a, labels_b and truth must have one non-zero length, got {len(a)}, {len(bb)}, {len(y)}")
    b = sum(1 for pa, pb, t in zip(a, bb, y) if pa == t and pb != t)
    c = sum(1 for pa, pb, t in zip(a, bb, y) if pa != t and pb == t)
    return b, c


def paired_comparison(labels_a: Sequence[int], labels_b: Sequence[int], truth: Sequence[int],
                      confidence: float = 0.95) -> dict:
    """Compare classifiers A and B on the same images: accuracies, Wilson intervals, exact McNemar.

    Returns ``{"n", "correct_a", "correct_b", "accuracy_a", "accuracy_b", "ci_a", "ci_b",
    "b", "c", "p_value"}`` (``b``: right by A only, ``c``: right by B only).

    Shapes: three label sequences of one length ``N``.
    """
    b, c = discordant_pairs(labels_a, labels_b, truth)
    y = _labels(truth, "truth")
    ka = sum(int(p == t) for p, t in zip(_labels(labels_a, "labels_a"), y))
    kb = sum(int(p == t) for p, t in zip(_labels(labels_b, "labels_b"), y))
    n = len(y)
    return {
        "n": n, "correct_a": ka, "correct_b": kb, "accuracy_a": ka / n, "accuracy_b": kb / n,
        "ci_a": wilson_interval(ka, n, confidence), "ci_b": wilson_interval(kb, n, confidence),
        "b": b, "c": c, "p_value": mcnemar_exact(b, c),
    }


def min_discordant_for_significance(alpha: float = 0.05) -> int:
    """Smallest ``c`` for which ``mcnemar_exact(0, c) < alpha``: with fewer one-sided disagreements
    no difference between two classifiers can be detected at level ``alpha`` (6 at 0.05)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}")
    c = 1
    while mcnemar_exact(0, c) >= alpha:
        c += 1
    return c

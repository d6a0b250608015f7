"""ane_vit.stats against hand-checked values: Wilson and Clopper-Pearson intervals, exact McNemar."""

import numpy as np
import pytest
import torch

from ane_vit.stats import (
    binomial_cdf,
    discordant_pairs,
    exact_interval,
    mcnemar_exact,
    min_discordant_for_significance,
    paired_comparison,
    wilson_interval,
)

Z2 = 1.959963984540054**2  # z^2 at 95 %: 3.841459


def test_wilson_at_the_edges_matches_the_closed_form():
    # k = 0: (0, z^2 / (n + z^2)); k = n: (n / (n + z^2), 1)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(Z2 / (10 + Z2), abs=1e-12))
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775328, abs=1e-7)
    assert wilson_interval(10, 10) == (pytest.approx(0.7224672, abs=1e-7), 1.0)


def test_wilson_350_of_360_by_hand():
    # center (350 + z^2/2) / (360 + z^2) = 0.967236; half z/(360+z^2) sqrt(350*10/360 + z^2/4) = 0.017607
    low, high = wilson_interval(350, 360)
    assert low == pytest.approx(0.9496299, abs=1e-7) and high == pytest.approx(0.9848430, abs=1e-7)


@pytest.mark.parametrize("k, n, wilson, exact", [
    # Newcombe (1998), Statistics in Medicine 17:857-872, table I (methods 3 and 5), 4 decimals
    (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0, 0.1611), (0.0, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
])
def test_intervals_match_newcombe_1998(k, n, wilson, exact):
    assert wilson_interval(k, n) == pytest.approx(wilson, abs=6e-5)
    assert exact_interval(k, n) == pytest.approx(exact, abs=6e-5)


def test_exact_interval_at_the_edges_matches_the_closed_form():
    # 0 of n: high = 1 - (alpha/2)^(1/n); n of n: low = (alpha/2)^(1/n)
    assert exact_interval(0, 10) == (0.0, pytest.approx(1 - 0.025**0.1, abs=1e-12))
    assert exact_interval(10, 10) == (pytest.approx(0.025**0.1, abs=1e-12), 1.0)
    assert exact_interval(0, 10)[1] == pytest.approx(0.3084971, abs=1e-7)


def test_both_intervals_contain_the_estimate_and_shrink_with_n():
    for k in (0, 1, 5, 180, 355, 359, 360):
        w, e = wilson_interval(k, 360), exact_interval(k, 360)
        assert w[0] <= k / 360 <= w[1] and e[0] <= k / 360 <= e[1]
    assert np.diff(wilson_interval(1790, 1797)) < np.diff(wilson_interval(358, 360))


def test_exact_interval_solves_its_defining_tails():
    low, high = exact_interval(350, 360)
    assert 1 - binomial_cdf(349, 360, low) == pytest.approx(0.025, abs=1e-9)
    assert binomial_cdf(350, 360, high) == pytest.approx(0.025, abs=1e-9)


def test_binomial_cdf_small_cases():
    assert binomial_cdf(0, 3, 0.5) == 1 / 8
    assert binomial_cdf(1, 3, 0.5) == 4 / 8
    assert binomial_cdf(1, 2, 0.3) == pytest.approx(1 - 0.09)
    assert binomial_cdf(-1, 5, 0.3) == 0.0 and binomial_cdf(5, 5, 0.3) == 1.0


@pytest.mark.parametrize("b, c, p", [
    (0, 6, 2 / 2**6),                         # 0.03125: the smallest one-sided split that rejects at 5 %
    (0, 5, 2 / 2**5),                         # 0.0625: does not
    (1, 5, 2 * (1 + 6) / 2**6),               # 0.21875
    (2, 8, 2 * (1 + 10 + 45) / 2**10),        # 0.109375
    (10, 2, 2 * (1 + 12 + 66) / 2**12),       # 0.0385742
    (3, 3, 1.0), (0, 0, 1.0), (0, 1, 1.0),
])
def test_mcnemar_exact_known_tables(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-15)
    assert mcnemar_exact(c, b) == mcnemar_exact(b, c)


def test_min_discordant_for_significance():
    assert min_discordant_for_significance(0.05) == 6
    assert min_discordant_for_significance(0.01) == 8  # 2/2^7 = 0.0156, 2/2^8 = 0.0078


def test_discordant_pairs_and_paired_comparison():
    y = [0, 1, 2, 3, 4, 5, 6]
    a = [0, 1, 2, 3, 9, 9, 7]  # right on 0..3
    b = np.array([0, 9, 2, 9, 4, 9, 8])  # right on 0, 2, 4
    # images 1, 3 by A only; image 4 by B only; 5 and 6 wrong under both (6 with different
    # wrong labels: the two disagree, but neither is right, so it is not discordant)
    assert discordant_pairs(a, b, y) == (2, 1)
    r = paired_comparison(a, torch.tensor(b), y)
    assert (r["n"], r["correct_a"], r["correct_b"], r["b"], r["c"]) == (7, 4, 3, 2, 1)
    assert r["p_value"] == 1.0 and r["ci_a"] == wilson_interval(4, 7)


@pytest.mark.parametrize("call, err, message", [
    (lambda: wilson_interval(11, 10), ValueError, "k must lie in 0..n = 0..10, got 11"),
    (lambda: wilson_interval(1, 0), ValueError, "n must be >= 1, got 0"),
    (lambda: wilson_interval(1.0, 10), TypeError, "k must be an int, got float 1.0"),
    (lambda: exact_interval(1, 10, confidence=95), ValueError, "confidence must be a number strictly between 0 and 1, got 95"),
    (lambda: mcnemar_exact(-1, 2), ValueError, "b must be >= 0, got -1"),
    (lambda: mcnemar_exact(1, True), TypeError, "c must be an int, got bool True"),
    (lambda: discordant_pairs([1, 2], [1], [1, 2]), ValueError,
     "labels_a, labels_b and truth must have one non-zero length, got 2, 1, 2"),
    (lambda: min_discordant_for_significance(5), ValueError, "alpha must be a number strictly between 0 and 1, got 5"),
])
def test_bad_input_is_named(call, err, message):
    with pytest.raises(err) as info:
        call()
    assert str(info.value) == message

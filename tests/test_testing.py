"""The numerical checks every other test relies on: ``assert_parity``, ``psnr``, ``max_abs_error``.

A check that lets a broken value through makes every test built on it pass; these tests pin
the thresholds at their boundaries and the handling of NaN and infinities (which compare
False with any threshold).
"""

import math

import numpy as np
import pytest
import torch

from ane_vit.testing import ParityReport, assert_parity, check_shape, max_abs_error, psnr


def test_max_abs_error_and_psnr_by_hand():
    ref = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    test = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    assert max_abs_error(ref, test) == 1.0
    mse = (1.0**2 + 0.5**2) / 4  # two errors: 1 and 0.5, over four elements
    assert psnr(ref, test) == pytest.approx(20 * math.log10(2.0 / math.sqrt(mse)))  # peak = max |ref| = 2
    assert psnr(ref, ref) == math.inf
    assert psnr(torch.zeros(3), torch.ones(3)) == -math.inf  # no signal: nothing is resolved
    with pytest.raises(ValueError, match=r"shapes differ: reference \(2, 2\) vs test \(4,\)"):
        max_abs_error(ref, test.reshape(4))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(ref, test.reshape(4))


def test_thresholds_are_inclusive_and_named_in_the_error():
    ref, test = np.array([0.0, 4.0]), np.array([0.25, 4.0])  # max abs error 0.25, exactly
    report = assert_parity(ref, test, atol=0.25)
    assert isinstance(report, ParityReport) and (report.max_abs, report.psnr_db) == report
    assert report.max_abs == 0.25
    with pytest.raises(AssertionError, match=r"out: max abs error 0.25 > allowed 0.24"):
        assert_parity(ref, test, atol=0.24, name="out")
    db = report.psnr_db  # 20 log10(4 / sqrt(0.25**2 / 2))
    assert db == pytest.approx(20 * math.log10(4 / math.sqrt(0.25**2 / 2)))
    assert assert_parity(ref, test, min_psnr=db).psnr_db == db
    with pytest.raises(AssertionError, match=r"PSNR 27.1 dB < required 28.0 dB"):
        assert_parity(ref, test, min_psnr=28.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("side", ["reference", "test"])
def test_nan_and_inf_always_fail_and_say_where(bad, side):
    ref = torch.arange(12.0).reshape(3, 4)
    test = ref.clone()
    (ref if side == "reference" else test)[1, 2] = bad
    for kwargs in ({}, {"atol": 1e3}, {"min_psnr": -100.0}, {"atol": 1e3, "min_psnr": -100.0}):
        with pytest.raises(AssertionError, match=rf"logits: the {side} has 1 non-finite value.*index \(1, 2\)"):
            assert_parity(ref, test, name="logits", **kwargs)


def test_nan_in_both_at_the_same_place_fails():
    ref = torch.tensor([1.0, math.nan, 3.0])
    with pytest.raises(AssertionError, match=r"1 NaN"):
        assert_parity(ref, ref.clone(), atol=1.0)


def test_sequences_are_checked_pairwise_and_report_the_worst():
    refs = [torch.zeros(2) + 1.0, torch.tensor([2.0, 2.0])]
    tests = [torch.tensor([1.0, 1.1]), torch.tensor([2.0, 2.5])]
    report = assert_parity(refs, tests)
    assert report.max_abs == pytest.approx(0.5)
    assert report.psnr_db == pytest.approx(min(psnr(r, t) for r, t in zip(refs, tests)))
    with pytest.raises(AssertionError, match=r"stages\[1\]: max abs error 0.5"):
        assert_parity(refs, tests, atol=0.2, name="stages")
    with pytest.raises(AssertionError, match=r"stages\[1\]: the test has 1 non-finite"):
        assert_parity(refs, [tests[0], torch.tensor([2.0, math.nan])], name="stages")
    with pytest.raises(AssertionError, match="expected 2 outputs, got 1"):
        assert_parity(refs, tests[:1])
    with pytest.raises(AssertionError, match=r"has shape \(3,\), expected \(2,\)"):
        assert_parity(refs[0], torch.zeros(3))


def test_check_shape_wildcards():
    check_shape(torch.zeros(2, 3, 1, 5), (None, 3, 1, None))
    with pytest.raises(AssertionError, match=r"x has shape \(2, 3, 1, 5\), expected \(2, 4, 1, 5\)"):
        check_shape(torch.zeros(2, 3, 1, 5), (2, 4, 1, 5), name="x")
    with pytest.raises(AssertionError, match="expected"):
        check_shape(torch.zeros(2, 3), (2, 3, 1))


def test_randomize_gives_trained_looking_values():
    from torch import nn

    from ane_vit.norm import LayerNormANE
    from ane_vit.testing import randomize_

    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), LayerNormANE(64), nn.Linear(64, 32))
    randomize_(model, seed=5).requires_grad_(False)
    bn, ln = model[1], model[2]
    for scale in (bn.weight, ln.weight):
        assert 0.9 < float(scale.mean()) < 1.1 and float(scale.std()) > 0.05  # around 1, not all 1
    for shift in (bn.bias, ln.bias, model[0].bias):
        assert abs(float(shift.mean())) < 0.05 and float(shift.std()) > 0.05
    assert 0.5 <= float(bn.running_var.min()) and float(bn.running_var.max()) < 1.5
    assert float(bn.running_mean.abs().max()) > 0.0
    assert float(model[0].weight.std()) == pytest.approx(27**-0.5, rel=0.2)  # 1/sqrt(fan_in), fan_in = 3*3*3
    assert float(model[3].weight.std()) == pytest.approx(64**-0.5, rel=0.2)
    again = randomize_(nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), LayerNormANE(64), nn.Linear(64, 32)), seed=5)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

"""The committed records of chapter 8 agree with the data and with themselves.

results/digits.json, digits_finetune.json, digits_crossval.json and digits_threshold.json are
written by `python -m ane_vit.digits {evaluate,finetune,crossval,threshold}` (minutes to an
hour each); the chapter reads them. These checks recompute every summary from the per-image
labels the files carry, so a hand edit, a stale file or a mixed-up split fails here.
"""

import json

import numpy as np
import pytest

from ane_vit.digits.report import decode_labels, with_statistics
from ane_vit.notebook import results_dir
from ane_vit.stats import wilson_interval

RESULTS = results_dir()


def _load(name):
    return json.loads((RESULTS / name).read_text())


@pytest.fixture(scope="module")
def split_labels():
    """The test split's true labels, from the data (not from a results file)."""
    from ane_vit.digits import load_data
    from ane_vit.digits.evaluate import label_string

    return label_string(load_data()[3])


@pytest.fixture(scope="module")
def digits():
    return _load("digits.json")


def _check_rows(rows, truth):
    y = decode_labels(truth)
    for r in rows:
        pred = decode_labels(r["labels"])
        assert len(pred) == len(y), r["stage"]
        correct = sum(p == t for p, t in zip(pred, y))
        assert r["accuracy"] == pytest.approx(correct / len(y)), r["stage"]
        assert r["errors"] == len(y) - correct, r["stage"]


def test_digits_rows_match_their_labels_and_the_split(digits, split_labels):
    assert digits["split"]["labels"] == split_labels and digits["split"]["n_test"] == 360
    _check_rows(digits["stages"], split_labels)
    fp32 = decode_labels(digits["stages"][0]["labels"])
    for r in digits["stages"]:
        agree = sum(a == b for a, b in zip(decode_labels(r["labels"]), fp32)) / len(fp32)
        assert r["agreement_with_fp32"] == pytest.approx(agree), r["stage"]
    fp16 = next(r for r in digits["stages"] if r["stage"] == "program fp16 (iOS16), interpreted")
    for r in digits["stages"]:
        if "bytes" in r:
            assert r["ratio_to_fp16"] == pytest.approx(fp16["bytes"] / r["bytes"]), r["stage"]


def test_finetuned_rows(digits, split_labels):
    ft = _load("digits_finetune.json")
    assert ft["split"]["labels"] == split_labels
    _check_rows(ft["rows"], split_labels)
    fp16 = next(r for r in digits["stages"] if r["stage"] == "program fp16 (iOS16), interpreted")
    assert ft["fp16_bytes"] == fp16["bytes"]  # the same float16 program size the post-training rows divide by
    names = {r["stage"] for r in ft["rows"]}
    assert names == {"program prune 50 %, fine-tuned", "program prune 2:4, fine-tuned",
                     "program palettize 2 bit, fine-tuned"}
    for r in ft["rows"]:
        assert r["fine_tuned"] is True and r["ratio_to_fp16"] == pytest.approx(ft["fp16_bytes"] / r["bytes"])
        assert len(r["fine_tuning"]["pytorch_fp32_labels"]) == 360
        if r["method"] == "palettize":
            assert r["distinct_values_per_weight"] <= 4  # a 2-bit table in every palettized weight
        else:
            assert r["sparsity"] == pytest.approx(0.5, abs=0.01)  # what the program stores, counted from its masks


def test_crossval_pools_every_digit_once():
    from sklearn.datasets import load_digits

    from ane_vit.digits.evaluate import label_string

    cv = _load("digits_crossval.json")
    import torch

    assert cv["true_labels"] == label_string(torch.from_numpy(load_digits().target))
    pred, true = decode_labels(cv["labels"]), decode_labels(cv["true_labels"])
    correct = sum(p == t for p, t in zip(pred, true))
    assert len(pred) == 1797 and correct == cv["correct"] == sum(f["correct"] for f in cv["per_fold"])
    assert sum(f["n_test"] for f in cv["per_fold"]) == 1797 and len(cv["per_fold"]) == cv["folds"]
    assert cv["wilson_95"] == pytest.approx(list(wilson_interval(correct, 1797)))
    assert all(f["training"]["epochs"] == 12 for f in cv["per_fold"])  # trained like the shipped model


def test_threshold_study_adds_up(digits, split_labels):
    th = _load("digits_threshold.json")
    assert th["split"]["labels"] == split_labels
    rows = with_statistics(th["rows"], split_labels, th["rows"][0]["labels"])
    assert th["rows"][0]["method"] == "none" and th["rows"][0]["bytes"] == th["fp16_bytes"]
    for r in rows:
        parts = r["breakdown"]
        assert sum(v for k, v in parts.items() if k != "total") == parts["total"] == r["bytes"], r["program"]
        assert r["saved_bytes"] == th["fp16_bytes"] - r["bytes"]
        assert r["errors"] == 360 - r["correct"]
    by_name = {r["program"]: r for r in rows}
    for method in ("palettize 4 bit", "palettize 2 bit", "int8 per channel"):
        default, everything = by_name[f"{method}, threshold 2048"], by_name[f"{method}, threshold 0"]
        assert everything["bytes"] < default["bytes"]  # threshold 0 reaches more constants
        assert everything["breakdown"]["float16 small"] == 0 and default["breakdown"]["float16 small"] > 0
        assert everything["breakdown"]["rank-1"] == default["breakdown"]["rank-1"] > 0  # never compressed
    # the post-training 4-bit row of digits.json is the same program as the study's default 4-bit row
    p4 = next(r for r in digits["stages"] if r["stage"] == "program palettize 4 bit")
    assert p4["bytes"] == by_name["palettize 4 bit, threshold 2048"]["bytes"]
    assert np.isclose(p4["accuracy"], by_name["palettize 4 bit, threshold 2048"]["accuracy"], atol=2 / 360)

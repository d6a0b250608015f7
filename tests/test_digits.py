"""ane_vit.digits: the data, the shipped model, and its accuracy at every stage.

fp32 accuracy is checked on the whole test split (360 images, seconds). PyTorch float16 is
25-170x slower than float32 on some CPUs and the numpy interpreter is slow too, so the
later stages are checked on a fixed stratified subset of 50 test images (5 per class);
``python -m ane_vit.digits evaluate`` measures them on the whole split (results/digits.json).
"""

import json

import pytest
import torch

from ane_vit.digits import build_digits_model, load_data, load_model, load_record, to_model_input
from ane_vit.digits.cli import main
from ane_vit.digits.evaluate import export_digits, predict, predict_program, stratified_subset
from ane_vit.digits.model import weights_path
from ane_vit.digits.train import random_shift, recompute_batch_norm
from ane_vit.moat import MOAT
from ane_vit.reference.moat import ReferenceMOAT
from ane_vit.testing import assert_parity


@pytest.fixture(scope="module")
def data():
    return load_data()


@pytest.fixture(scope="module")
def models():
    return load_model("reference"), load_model("ane")


@pytest.fixture(scope="module")
def fp32_labels(data, models):
    return predict(models[0], data[2])


def test_load_data_is_a_fixed_stratified_model_ready_split(data):
    x_train, y_train, x_test, y_test = data
    assert x_train.shape == (1437, 3, 64, 64) and x_test.shape == (360, 3, 64, 64)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert float(x_test.min()) == -1.0 and float(x_test.max()) == 1.0
    assert torch.equal(x_test[:, 0], x_test[:, 2])  # grey repeated as RGB
    counts = torch.bincount(y_test, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified
    again = load_data()
    assert torch.equal(again[3], y_test) and torch.equal(again[2], x_test)


def test_to_model_input_upsamples_and_normalises():
    img = torch.zeros(1, 8, 8)
    img[0, 3, 4] = 16.0
    x = to_model_input(img)
    assert x.shape == (1, 3, 64, 64)
    assert float(x[0, 0, 0, 0]) == -1.0  # background
    assert float(x[0, 0, 3 * 8 + 4, 4 * 8 + 4]) > 0.5  # the lit pixel's area
    flat = to_model_input(torch.stack([torch.full((8, 8), 16.0), torch.full((8, 8), 8.0)]))
    assert torch.equal(flat[0], torch.ones(3, 64, 64)) and torch.equal(flat[1], torch.zeros(3, 64, 64))  # 0..16 -> -1..1
    with pytest.raises(ValueError, match=r"\(N, 8, 8\) or \(N, 64\), got \(2, 9, 9\)"):
        to_model_input(torch.zeros(2, 9, 9))


def test_load_model_gives_both_twins_with_the_same_function(data, models):
    reference, ane = models
    assert isinstance(reference, ReferenceMOAT) and isinstance(ane, MOAT)
    assert not reference.training and not ane.training
    x = data[2][:8]
    with torch.no_grad():
        ref, out = reference(x), ane(x)
    assert out.shape == (8, 10)
    assert_parity(ref, out, min_psnr=100)
    with pytest.raises(ValueError, match="kind must be one of"):
        load_model("coreml")
    assert weights_path().stat().st_size <= 2_000_000


def test_fp32_accuracy_on_the_whole_test_split(data, models, fp32_labels):
    y = data[3]
    assert float((fp32_labels == y).double().mean()) >= 0.97
    ane = predict(models[1], data[2])
    assert float((ane == fp32_labels).double().mean()) == 1.0
    record = load_record()
    assert record["test_accuracy"] == pytest.approx(float((fp32_labels == y).double().mean()))
    assert {"epochs", "seed", "wall_seconds", "versions"} <= set(record)


def test_fp16_and_the_converted_program_keep_the_accuracy_on_a_subset(data, models, fp32_labels, tmp_path):
    # A fixed stratified subset of 50 test images: float16 is slow on this kind of CPU.
    keep = stratified_subset(data[3], 5)
    x, y, fp32 = data[2][keep], data[3][keep], fp32_labels[keep]
    assert len(keep) == 50 and torch.equal(torch.bincount(y), torch.full((10,), 5))
    acc32 = float((fp32 == y).double().mean())
    fp16 = predict(models[1], x, torch.float16)
    assert float((fp16 == y).double().mean()) >= acc32 - 0.005
    program = export_digits(models[1], tmp_path / "digits.mlpackage", batch=50)
    labels = predict_program(program, x)
    assert float((labels == y).double().mean()) >= acc32 - 0.005
    assert float((labels == fp32).double().mean()) >= 0.995


def test_stored_batch_norm_statistics_are_what_eval_needs(data):
    # With the seed's momentum 0.01 the running statistics lag far behind; recomputing them
    # over the data makes eval mode match train-mode statistics of the same batch.
    model = build_digits_model("reference").eval()
    x = data[0][:64]
    recompute_batch_norm(model, x, batch_size=64)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.01 for m in norms[1:] if m.eps == 1e-3)  # momenta restored
    with torch.no_grad():
        evaluated = model(x)
        model.train()
        trained = model(x)
    assert_parity(trained, evaluated, min_psnr=40)  # not exact: running variances are unbiased


def test_random_shift_moves_images_and_fills_background():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape
    assert not torch.equal(x, y)
    assert torch.equal(random_shift(x, 0, g), x)


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "digits_micro_moat.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as err:
        main(["train", "--output-dir", str(tmp_path)])
    assert err.value.code == 2 and "--overwrite" in capsys.readouterr().err
    out = tmp_path / "digits.json"
    out.write_text(json.dumps({}))
    with pytest.raises(SystemExit):
        main(["evaluate", "--output", str(out)])
    assert "already exists" in capsys.readouterr().err


def test_the_recorded_evaluation_meets_the_targets():
    # results/digits.json is what `python -m ane_vit.digits evaluate` measured on the whole split.
    from ane_vit.notebook import results_dir

    results = json.loads((results_dir() / "digits.json").read_text())
    stages = {r["stage"]: r for r in results["stages"]}
    split = {k: v for k, v in results["split"].items() if k != "labels"}
    assert split == {"n_test": 360, "subset": False, "seed": 0, "test_fraction": 0.2}
    assert len(results["split"]["labels"]) == 360  # the true labels, one digit per image
    fp32 = stages["reference, PyTorch fp32"]["accuracy"]
    assert fp32 >= 0.97
    for name in ("ANE, PyTorch fp32", "ANE, PyTorch fp16", "program fp16 (iOS16), interpreted"):
        assert stages[name]["accuracy"] >= fp32 - 0.005, name
    assert stages["program fp16 (iOS16), interpreted"]["agreement_with_fp32"] >= 0.995
    for name in ("program palettize 8 bit", "program palettize 4 bit", "program int8 per channel", "program int4 blocks of 32"):
        assert stages[name]["accuracy"] >= fp32 - 0.005, name
        assert stages[name]["ratio_to_fp16"] > 1.2, name
    assert {"date", "machine", "versions"} <= set(results["provenance"])


@pytest.mark.slow
def test_evaluate_on_a_subset_writes_every_stage(tmp_path):
    from ane_vit.digits.evaluate import evaluate, format_table

    results = evaluate(limit=20, compressed=False, work_dir=tmp_path)
    assert results["split"]["n_test"] == 20 and results["split"]["subset"]
    assert [r["stage"] for r in results["stages"]] == [
        "reference, PyTorch fp32", "ANE, PyTorch fp32", "ANE, PyTorch fp16", "program fp16 (iOS16), interpreted"]
    assert len(format_table(results).splitlines()) == 5
    with pytest.raises(ValueError, match="limit must be an int from 10 to 360"):
        evaluate(limit=5)

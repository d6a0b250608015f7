"""ane_vit.digits under bad input: nothing lost, nothing silent, every refusal before the work.

Issue 16 (command-line side). No real training or conversion runs here: the slow steps
(training, export, the numpy interpreter) are replaced by fakes that record that they were
reached, so each test checks that a bad path or value is refused *before* them, names the
flag or file, and leaves existing files as they were.
"""

import json
import os

import pytest
import torch
from torch import nn

import ane_vit.digits.evaluate as evaluate_mod
import ane_vit.digits.train as train_mod
from ane_vit.digits import load_state
from ane_vit.digits.cli import main
from ane_vit.digits.evaluate import COMPRESSIONS, check_work_dir, evaluate, program_files
from ane_vit.digits.model import weights_path


class Reached(Exception):
    """A slow step was reached: the checks before it let the call through."""


def _never(*args, **kwargs):
    raise Reached


class _FakeProgram:
    """Stands in for a coremltools MLModel: ``save`` writes a small package folder."""

    def __init__(self, tag: str):
        self.tag = tag

    def save(self, path: str) -> None:
        os.makedirs(path)
        with open(os.path.join(path, "weights.bin"), "w") as f:
            f.write(self.tag)


class _Tiny(nn.Module):
    """A 10-class classifier small enough to run in every stage instantly."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):  # (N, 3, H, W) -> (N, 10)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture
def fast_evaluate(monkeypatch):
    """``evaluate`` with fake data (20 test images, 2 per class), a tiny model and fake programs."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(2)  # (20,)
    x = torch.randn(20, 3, 4, 4, generator=g)
    monkeypatch.setattr(evaluate_mod, "load_data", lambda: (x, y, x, y))
    monkeypatch.setattr(evaluate_mod, "load_model", lambda kind, weights=None: _Tiny())

    def export(model, path, target="iOS16", batch=40, overwrite=False):
        from ane_vit.export import save_program

        return save_program(_FakeProgram(f"fp16 {target}"), path, overwrite=overwrite)

    monkeypatch.setattr(evaluate_mod, "export_digits", export)
    monkeypatch.setattr(evaluate_mod, "compress_program", lambda source, method, calibration=None, **kw: _FakeProgram(method))
    monkeypatch.setattr(evaluate_mod, "predict_program", lambda program, xs: torch.zeros(len(xs), dtype=torch.int64))
    monkeypatch.setattr("ane_vit.compress.weight_sparsity", lambda program: 0.5)
    return x, y


# --------------------------------------------------------------------------- --work-dir


def test_evaluate_refuses_a_work_dir_holding_its_programs_before_any_work(tmp_path, monkeypatch, capsys):
    # Data loss 3: `evaluate --work-dir DIR` replaced the programs in DIR without --overwrite.
    kept = tmp_path / "digits_fp16_iOS16.mlpackage" / "KEEP.txt"
    kept.parent.mkdir()
    kept.write_text("the user's program")
    monkeypatch.setattr(evaluate_mod, "evaluate", _never)
    monkeypatch.setattr(evaluate_mod, "load_data", _never)
    with pytest.raises(SystemExit) as err:
        main(["evaluate", "--work-dir", str(tmp_path), "--output", str(tmp_path / "o.json"), "--no-compressed"])
    assert err.value.code == 2
    assert (f"--work-dir: 1 program(s) already in the work folder {tmp_path}: digits_fp16_iOS16.mlpackage; "
            "pass overwrite=True / --overwrite to replace them, or choose another folder") in capsys.readouterr().err
    assert kept.read_text() == "the user's program"
    with pytest.raises(FileExistsError, match="1 program\\(s\\) already in the work folder"):
        evaluate(work_dir=tmp_path, compressed=False)  # the API checks before loading anything
    assert kept.read_text() == "the user's program"


def test_evaluate_saves_every_program_through_the_atomic_save(tmp_path, fast_evaluate):
    old = tmp_path / "digits_int8_per_channel.mlpackage"
    old.mkdir()
    (old / "weights.bin").write_text("old")
    with pytest.raises(FileExistsError, match="digits_int8_per_channel.mlpackage"):
        evaluate(work_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [old.name]  # refused before any program was written
    assert (old / "weights.bin").read_text() == "old"
    results = evaluate(work_dir=tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(program_files())  # no staging folder left
    assert (old / "weights.bin").read_text() == "int8"
    assert [r["stage"] for r in results["stages"]][-len(COMPRESSIONS):] == [f"program {n}" for n in COMPRESSIONS]
    assert results["split"] == {"n_test": 20, "subset": False, "seed": 0, "test_fraction": 0.2,
                               "labels": "01234567890123456789"}


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("x"), "--work-dir: the work folder {p} is a file, not a folder; choose a folder for the programs"),
    (lambda p: p.parent.joinpath("afile").write_text("x"),
     "--work-dir: cannot write to the output folder ({q} is a file, not a folder); choose another folder: {q}/w"),
])
def test_a_work_dir_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch, capsys, make, message):
    path = tmp_path / "w"
    make(path)
    work_dir = path if path.exists() else tmp_path / "afile" / "w"
    monkeypatch.setattr(evaluate_mod, "evaluate", _never)
    with pytest.raises(SystemExit) as err:
        main(["evaluate", "--work-dir", str(work_dir), "--output", str(tmp_path / "o.json")])
    assert err.value.code == 2
    assert message.format(p=path, q=tmp_path / "afile") in capsys.readouterr().err
    with pytest.raises(OSError):
        check_work_dir(work_dir)


def test_evaluate_output_must_be_a_writable_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate_mod, "evaluate", _never)
    for output, message in [(tmp_path, f"--output {tmp_path} is a folder; give a file name"),
                            (tmp_path / "afile" / "o.json", "--output {}: cannot write to the output folder".format(tmp_path / "afile" / "o.json"))]:
        (tmp_path / "afile").write_text("x")
        with pytest.raises(SystemExit) as err:
            main(["evaluate", "--output", str(output)])
        assert err.value.code == 2
        assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- --limit


def test_limit_beyond_the_split_is_refused_before_any_work(monkeypatch, capsys, tmp_path):
    # `evaluate --limit 100000` ran the whole split and recorded it as a subset.
    monkeypatch.setattr(evaluate_mod, "evaluate", _never)
    monkeypatch.setattr("ane_vit.digits.data.load_data", lambda: (None, None, torch.zeros(360, 3, 64, 64), torch.zeros(360)))
    with pytest.raises(SystemExit) as err:
        main(["evaluate", "--limit", "100000", "--output", str(tmp_path / "o.json")])
    assert err.value.code == 2
    assert "--limit must be an int from 10 to 360 (the test images, 10 classes), got 100000" in capsys.readouterr().err
    for bad in (5, 361, True, 50.0):
        with pytest.raises(ValueError, match=rf"limit must be an int from 10 to 360 \(the test images, 10 classes\), got {bad!r}"):
            evaluate_mod.check_limit(bad, 360)


def test_the_split_records_the_images_that_ran(fast_evaluate):
    assert evaluate(limit=10, compressed=False)["split"] == {"n_test": 10, "subset": True, "seed": 0, "test_fraction": 0.2,
                                                            "labels": "0123456789"}
    assert evaluate(limit=20, compressed=False)["split"] == {"n_test": 20, "subset": False, "seed": 0, "test_fraction": 0.2,
                                                            "labels": "01234567890123456789"}
    with pytest.raises(ValueError, match=r"limit must be an int from 10 to 20 \(the test images, 10 classes\), got 21"):
        evaluate(limit=21, compressed=False)


# --------------------------------------------------------------------------- weights


def _save(path, value):
    torch.save(value, path)


def _shipped():
    return torch.load(weights_path(), weights_only=True)


def _with(key_index, fn):
    state = _shipped()
    key = list(state)[key_index]
    state[key] = fn(state[key])
    return state, key


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "empty dict", "a tensor", "a folder", "wrong shape",
                                  "nan", "int", "missing key"])
def test_weights_that_are_not_the_digits_model_are_refused_with_the_file_named(kind, tmp_path, monkeypatch, capsys):
    path = tmp_path / "w.pt"
    if kind == "truncated":
        data = weights_path().read_bytes()
        path.write_bytes(data[: len(data) // 2])
        message = r"cannot be read by torch\.load \(.*\); the file is damaged or not a PyTorch state dict"
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
        message = r"cannot be read by torch\.load"
    elif kind == "empty dict":
        _save(path, {})
        message = r"do not fit the micro-moat digits model: \d+ of the model's \d+ key\(s\) missing"
    elif kind == "a tensor":
        _save(path, torch.zeros(3))
        message = r"holds Tensor, not a state dict \(names to tensors\)"
    elif kind == "a folder":
        path.mkdir()
        message = r"is a folder, not a weights file"
    elif kind == "wrong shape":
        state, key = _with(0, lambda v: torch.zeros(2, 2))
        _save(path, state)
        message = rf"1 key\(s\) of the wrong shape: {key}: expected \(\d+, \d+, \d+, \d+\), got \(2, 2\)"
    elif kind == "nan":
        state, key = _with(0, lambda v: v.clone().index_fill_(0, torch.tensor([1]), float("nan")))
        _save(path, state)
        message = rf"1 value\(s\) that are not weights: {key}: \d+ NaN value\(s\)"
    elif kind == "int":
        state, key = _with(0, lambda v: v.round().to(torch.int32))
        _save(path, state)
        message = rf"{key}: dtype torch\.int32, expected a floating-point tensor"
    else:
        state = _shipped()
        key = list(state)[-1]
        del state[key]
        _save(path, state)
        message = rf"1 of the model's \d+ key\(s\) missing: {key}"
    with pytest.raises(ValueError, match=rf"digits weights {path} .*{message}"):
        load_state(path)
    monkeypatch.setattr(evaluate_mod, "evaluate", _never)
    with pytest.raises(SystemExit) as err:
        main(["evaluate", "--weights", str(path), "--output", str(tmp_path / "o.json")])
    assert err.value.code == 2
    err_text = capsys.readouterr().err
    assert f"--weights: digits weights {path}" in err_text and "Traceback" not in err_text


def test_the_shipped_weights_pass_the_checks():
    state = load_state()
    assert len(state) > 100 and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# --------------------------------------------------------------------------- train


def test_train_output_dir_that_is_a_file_is_refused_before_training(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(train_mod, "train", _never)
    for folder, message in [(afile, f"--output-dir {afile} is a file, not a folder"),
                            (afile / "sub", f"--output-dir {afile / 'sub' / 'digits_micro_moat.pt'}: cannot write to the output folder")]:
        with pytest.raises(SystemExit) as err:
            main(["train", "--output-dir", str(folder)])
        assert err.value.code == 2
        assert message in capsys.readouterr().err
    assert afile.read_text() == "x"


def test_train_writes_whole_files_and_an_interrupted_write_keeps_the_old_ones(tmp_path, monkeypatch, capsys):
    state = {"w": torch.ones(3)}
    record = {"test_accuracy": 0.5, "wall_seconds": 1.0, "cpu_seconds": 1.0, "epochs": 1, "seed": 0}
    monkeypatch.setattr(train_mod, "train", lambda **kw: (state, record))
    assert main(["train", "--output-dir", str(tmp_path)]) == 0
    assert torch.equal(torch.load(tmp_path / "digits_micro_moat.pt", weights_only=True)["w"], torch.ones(3))
    assert json.loads((tmp_path / "digits_micro_moat.json").read_text())["epochs"] == 1
    state["w"] = torch.zeros(3)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["train", "--output-dir", str(tmp_path), "--overwrite"])
    monkeypatch.undo()
    assert torch.equal(torch.load(tmp_path / "digits_micro_moat.pt", weights_only=True)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_micro_moat.json", "digits_micro_moat.pt"]


def _small_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 64, 64, generator=g)
    y = torch.arange(10).repeat(2)[:16]
    return x, y, x[:4], y[:4]


def test_train_refuses_a_batch_larger_than_the_split_and_bad_settings(monkeypatch):
    monkeypatch.setattr(train_mod, "load_data", _small_data)
    monkeypatch.setattr(train_mod, "build_digits_model", _never)
    with pytest.raises(ValueError, match="batch_size must be at most the 16 training images, got 100000"):
        train_mod.train(batch_size=100000, progress=False)
    for kwargs, message in [({"max_shift": -1}, "max_shift must be an int >= 0"), ({"lr": float("nan")}, "lr must be a positive finite"),
                            ({"lr": "0.1"}, "lr must be a positive finite number, got '0.1'")]:
        with pytest.raises(ValueError, match=message):
            train_mod.train(progress=False, **kwargs)


def test_a_diverged_training_raises_instead_of_returning_nan_weights(monkeypatch):
    monkeypatch.setattr(train_mod, "load_data", _small_data)
    monkeypatch.setattr(train_mod.F, "cross_entropy", lambda logits, y, **kw: logits.sum() * float("nan"))
    with pytest.raises(FloatingPointError, match=r"training diverged: the loss is nan at epoch 1, step 1, lr 0\.002; lower lr"):
        train_mod.train(epochs=1, batch_size=8, progress=False, threads=1)

"""The one loader of saved ML Programs (``ane_vit.interpret.load``), as every reader sees it.

Each way a path can fail to be a program (missing, a file, an empty or foreign folder, a
missing, truncated or replaced weight file, a neural-network model) has its own error type and
one message that names the file and says what to do; ``run_program``, ``analyze``,
``compress`` and the analysis command line all raise (or print) that same message. Also here:
``run_program``'s input checks (non-numeric inputs, non-finite values) and its observer hook.
The programs are a 1x1 convolution (64 -> 64 channels, 4,096 float16 weights), saved once.
"""

from __future__ import annotations

import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch import nn

ct = pytest.importorskip("coremltools")

from ane_vit.analysis import analyze  # noqa: E402
from ane_vit.analysis import main as analysis_main  # noqa: E402
from ane_vit.export import to_mlprogram  # noqa: E402
from ane_vit.interpret import (  # noqa: E402
    CorruptWeightsError,
    MissingWeightsError,
    NotAProgramError,
    ProgramLoadError,
    ProgramNotFoundError,
    TruncatedWeightsError,
    UnsupportedSpecError,
    load_program,
    run_program,
)

_GIVE = ("give the path of a .mlpackage folder (as written by python -m ane_vit.export, python -m ane_vit.compress or "
         "coremltools' MLModel.save)")
_AGAIN = "export (or copy) the whole .mlpackage folder again"


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """A saved float16 1x1 conv program, its weight file's size, and one input."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("load") / "conv.mlpackage"
    to_mlprogram(nn.Conv2d(64, 64, 1).eval(), torch.randn(1, 64, 4, 4)).save(str(path))
    (weights,) = path.rglob("weight.bin")
    return path, weights.stat().st_size


def _copy(conv, tmp_path, name="m.mlpackage"):
    path = tmp_path / name
    shutil.copytree(conv[0], path)
    return path, path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


def _case(kind: str, conv, tmp_path):
    """(path, error type, exact message) of one broken input, made in ``tmp_path``."""
    size = conv[1]
    if kind == "missing":
        p = tmp_path / "missing.mlpackage"
        return p, ProgramNotFoundError, f"no such .mlpackage: {str(p)!r} does not exist; {_GIVE}"
    if kind == "text":
        p = tmp_path / "notes.txt"
        p.write_text("not a model\n")
        return p, NotAProgramError, (f"{str(p)!r} is a file that is not a Core ML model; an ML Program is a .mlpackage "
                                     f"folder: {_GIVE}")
    if kind == "pt":
        p = tmp_path / "weights.pt"
        torch.save({"w": torch.zeros(3)}, p)
        return p, NotAProgramError, (f"{str(p)!r} is a zip archive (a PyTorch checkpoint saved with torch.save?), not a "
                                     "Core ML ML Program: convert the model first (python -m ane_vit.export, or "
                                     f"ane_vit.export.export_model); {_GIVE}")
    if kind == "empty":
        p = tmp_path / "empty.mlpackage"
        p.mkdir()
        return p, NotAProgramError, f"{str(p)!r} is an empty folder, not a Core ML ML Program (.mlpackage); {_GIVE}"
    if kind == "junk-manifest":
        p = tmp_path / "junk.mlpackage"
        p.mkdir()
        (p / "Manifest.json").write_text("junk")
        return p, NotAProgramError, (f"{str(p)!r} is not a readable .mlpackage: its Manifest.json is not a Core ML package "
                                     "manifest (JSONDecodeError: Expecting value: line 1 column 1 (char 0)); " + _AGAIN)
    if kind == "no-model-file":
        p, _ = _copy(conv, tmp_path)
        (p / "Data" / "com.apple.CoreML" / "model.mlmodel").unlink()
        return p, NotAProgramError, (f"{str(p)!r} is incomplete: its model file Data/com.apple.CoreML/model.mlmodel is "
                                     f"missing; {_AGAIN}")
    if kind == "no-weights":
        p, w = _copy(conv, tmp_path)
        w.unlink()
        return p, MissingWeightsError, (f"{str(p)!r}: its weight file {str(w)!r} is missing (2 weights are stored there): "
                                        f"the package is incomplete; {_AGAIN}")
    if kind == "truncated":
        p, w = _copy(conv, tmp_path)
        w.write_bytes(w.read_bytes()[: size // 2])
        return p, TruncatedWeightsError, (f"{str(p)!r}: its weight file {str(w)!r} has {size // 2:,} bytes but the weight "
                                          f"at byte 64 needs 8,320: the file is truncated (an interrupted copy?); {_AGAIN}")
    if kind == "truncated-header":
        p, w = _copy(conv, tmp_path)
        w.write_bytes(w.read_bytes()[:8400])  # the second weight's header starts at 8,320 and ends at 8,384
        return p, TruncatedWeightsError, (f"{str(p)!r}: its weight file {str(w)!r} has 8,400 bytes but the weight at "
                                          f"byte 8,320 needs 8,512: the file is truncated (an interrupted copy?); {_AGAIN}")
    if kind == "replaced-weights":
        p, w = _copy(conv, tmp_path)
        w.write_bytes(bytes(range(256)) * (size // 256))
        return p, CorruptWeightsError, (f"{str(p)!r}: its weight file {str(w)!r} is not a MIL weight file (storage version "
                                        f"{int.from_bytes(bytes([4, 5, 6, 7]), 'little')}, expected 2): it is damaged or "
                                        f"replaced; {_AGAIN}")
    if kind == "shifted-weights":
        p, w = _copy(conv, tmp_path)
        data = w.read_bytes()
        w.write_bytes(data[:64] + bytes(64) + data[64:])  # every weight header 64 bytes later than the program says
        return p, CorruptWeightsError, (f"{str(p)!r}: its weight file {str(w)!r} has no weight header at byte 64, where "
                                        f"the program reads one: the file is damaged or belongs to another program; {_AGAIN}")
    raise AssertionError(kind)


_KINDS = ["missing", "text", "pt", "empty", "junk-manifest", "no-model-file", "no-weights", "truncated",
          "truncated-header", "replaced-weights", "shifted-weights"]


def test_the_program_fixture_loads_and_its_weight_file_has_two_weights(conv):
    # The oracle's numbers above: weight 64x64 float16 (8,192 B) at data offset 128, bias (128 B) at 8,384.
    assert conv[1] == 64 + 64 + 8192 + 64 + 128
    types = [op.op_type for op in load_program(conv[0]).functions["main"].operations]
    assert types.count("conv") == 1


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("reader", ["load_program", "run_program", "analyze"])
def test_each_failure_has_its_type_and_one_message_naming_the_file(conv, tmp_path, kind, reader):
    path, error, message = _case(kind, conv, tmp_path)
    calls = {
        "load_program": lambda: load_program(path),
        "run_program": lambda: run_program(path, {"x": np.zeros((1, 64, 4, 4), np.float32)}),
        "analyze": lambda: analyze(path),
    }
    with pytest.raises(error) as info:
        calls[reader]()
    assert str(info.value) == message
    assert info.value.path == str(path) or info.value.path == repr(str(path))
    assert isinstance(info.value, ProgramLoadError) and isinstance(info.value, ValueError)


def test_a_missing_program_is_also_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_program(tmp_path / "nothing.mlpackage")


@pytest.mark.parametrize("kind", ["empty", "truncated", "no-weights"])
def test_the_analysis_command_line_prints_the_same_message(conv, tmp_path, capsys, kind):
    path, _, message = _case(kind, conv, tmp_path)
    with pytest.raises(SystemExit) as info:
        analysis_main([str(path)])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_neural_network_model_is_an_unsupported_spec():
    traced = torch.jit.trace(nn.ReLU().eval(), torch.randn(1, 4, 8))
    model = ct.convert(traced, convert_to="neuralnetwork", inputs=[ct.TensorType(name="x", shape=(1, 4, 8))])
    with pytest.raises(UnsupportedSpecError, match=re.escape(
            "MLModel (in memory) is a Core ML 'neuralNetwork' model, not an ML Program: ane_vit reads ML Programs only")):
        load_program(model)


# --------------------------------------------------------------------------- run_program's inputs


@pytest.mark.parametrize("value, got", [
    ("pixels.png", "str 'pixels.png'"),
    (None, "None"),
    ([["a", "b"]], "list of dtype <U1"),
    (np.zeros((1, 64, 4, 4), np.complex64), "ndarray of dtype complex64"),
    ({"x": 1}, "dict"),
])
def test_non_numeric_inputs_are_a_type_error_naming_the_input(conv, value, got):
    with pytest.raises(TypeError) as info:
        run_program(conv[0], {"x": value})
    assert str(info.value) == (f"input 'x' must be a numeric array (a numpy array or a CPU tensor) of shape "
                               f"(1, 64, 4, 4), got {got}")


def test_one_nan_pixel_warns_and_the_warning_counts_it(conv):
    x = np.random.default_rng(0).standard_normal((1, 64, 4, 4)).astype(np.float32)
    x[0, 3, 1, 2] = np.nan
    with pytest.warns(RuntimeWarning) as record:
        (out,) = run_program(conv[0], {"x": x}).values()
    messages = [str(w.message) for w in record if "holds" in str(w.message)]
    assert messages == ["input 'x' holds 1 NaN and 0 infinite values of 1024: every output they reach will be NaN or "
                        "infinite"]
    assert int(np.isnan(out).sum()) == 64  # the 1x1 conv spreads the one NaN pixel over all 64 channels of that pixel


def test_float32_values_beyond_float16_warn_as_overflow(conv):
    x = np.zeros((1, 64, 4, 4), np.float32)
    x[0, 0, 0, 0], x[0, 1, 0, 0] = 7e4, -np.inf  # 70,000 > 65,504: infinite in float16
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run_program(conv[0], {"x": x})
    messages = [str(w.message) for w in record]
    assert [m for m in messages if m.startswith("input")] == [
        "input 'x' holds 0 NaN and 2 infinite values of 1024; 1 of them are finite values beyond float16's range "
        "(largest 65,504), made infinite by the cast to the program's float16 input: every output they reach will be "
        "NaN or infinite"]
    assert "overflow encountered in cast" not in messages  # numpy's own, anonymous warning is not repeated


def test_finite_inputs_do_not_warn(conv):
    x = np.zeros((1, 64, 4, 4), np.float32)
    x[0, 0] = 65504.0  # float16's largest finite value, in one channel (the conv's output stays finite)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_program(conv[0], {"x": x})


# --------------------------------------------------------------------------- the observer hook


def test_observer_sees_the_input_then_every_op_with_its_outputs(conv):
    x = np.random.default_rng(1).standard_normal((1, 64, 4, 4)).astype(np.float32)
    func = load_program(conv[0]).functions["main"]
    seen = []
    out = run_program(conv[0], {"x": x}, observer=lambda name, op_type, outputs: seen.append((name, op_type, outputs)))
    ops = [op for op in func.operations if op.op_type != "const"]
    assert [(n, t) for n, t, _ in seen] == [("x", "input")] + [(op.name, op.op_type) for op in ops]
    np.testing.assert_array_equal(seen[0][2]["x"], x.astype(np.float16))  # the input as the program sees it
    (name, value), = seen[-1][2].items()
    np.testing.assert_array_equal(value, out[name])  # the last op's output is the program's output
    with pytest.raises(TypeError, match="observer must be callable"):
        run_program(conv[0], {"x": x}, observer="print")

"""Nothing lost, nothing silent: ``ane_vit.compress`` under bad settings, bad weights, bad paths
and Ctrl-C (issue 16), and the interpreter's asymmetric int8 dequantization.

Programs are tiny: a 1x1 conv of 64 -> 64 channels (4,096 float16 weights, above
coremltools' 2,048-element threshold), built with the MIL builder so that a weight can hold
NaN or infinity, and a two-conv program (64 -> 40 -> 64) where a group size of 16 fits one
weight's 64 output channels and not the other's 40.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import threading
import time

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from ane_vit import compress  # noqa: E402
from ane_vit.compress import cli, main  # noqa: E402
from ane_vit.interpret import load_program, run_program  # noqa: E402
from ane_vit.interpret.constexpr_ops import CONSTEXPR_OPS  # noqa: E402
from ane_vit.interpret.ops import _Args  # noqa: E402


def _convert(build, target, path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64, 4, 4), dtype=types.fp16)], opset_version=target)
    def prog(x):
        return build(x)

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       compute_precision=ct.precision.FLOAT16)
    model.save(str(path))
    return path


def _weight():
    return np.random.default_rng(0).standard_normal((64, 64, 1, 1)).astype(np.float16)


def _poisoned(source, path, index: int, value: float):
    """A copy of a one-weight program whose weight number ``index`` (row-major) is ``value`` on disk."""
    shutil.copytree(source, path)
    (blob,) = path.rglob("weight.bin")
    data = bytearray(blob.read_bytes())
    start = int.from_bytes(data[64 + 16: 64 + 24], "little")  # the first weight's header: data offset
    data[start + 2 * index: start + 2 * index + 2] = np.float16(value).tobytes()
    blob.write_bytes(bytes(data))
    return path


def _one_conv(w):
    return lambda x: mb.conv(x=x, weight=w, name="y")


@pytest.fixture(scope="module")
def p(tmp_path_factory):
    """Saved programs by name: conv16, conv18, nan16, inf16, pal16 (palettized conv16), two18."""
    folder = tmp_path_factory.mktemp("robust")
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((40, 64, 1, 1)).astype(np.float16)  # 2,560 values, 40 output channels
    w2 = rng.standard_normal((64, 40, 1, 1)).astype(np.float16)  # 2,560 values, 64 output channels
    out = {
        "conv16": _convert(_one_conv(_weight()), ct.target.iOS16, folder / "conv16.mlpackage"),
        "conv18": _convert(_one_conv(_weight()), ct.target.iOS18, folder / "conv18.mlpackage"),
        "two18": _convert(lambda x: mb.conv(x=mb.conv(x=x, weight=w1, name="a"), weight=w2, name="y"),
                          ct.target.iOS18, folder / "two18.mlpackage"),
    }
    out["nan16"] = _poisoned(out["conv16"], folder / "nan16.mlpackage", 0, np.nan)
    out["inf16"] = _poisoned(out["conv16"], folder / "inf16.mlpackage", 5 * 64 + 7, -np.inf)
    out["pal16"] = folder / "pal16.mlpackage"
    compress.palettize(out["conv16"], 4).save(str(out["pal16"]))
    return out


def _digest(path) -> str:
    h = hashlib.sha256()
    for f in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- nothing silent


@pytest.mark.parametrize("call, summary, reason", [
    (lambda p: compress.palettize(p["conv18"], 4, group_size=3), "palettize 4 bits (k-means, groups of 3 channels)",
     "Can't perform palettization: The number of channels at 0th axis (64) is not divisible by channel_group_size (3)."),
    (lambda p: compress.palettize(p["conv18"], 4, group_size=7), "palettize 4 bits (k-means, groups of 7 channels)",
     "Can't perform palettization: The number of channels at 0th axis (64) is not divisible by channel_group_size (7)."),
    (lambda p: compress.palettize(p["conv18"], 4, group_size=100000),
     "palettize 4 bits (k-means, groups of 100000 channels)",
     "Can't perform palettization: The number of channels at 0th axis (64) is not divisible by channel_group_size "
     "(100000)."),
    (lambda p: compress.quantize_int4_block(p["conv18"], 3), "int4 weights (linear symmetric, blocks of 3)",
     "Invalid block_sizes; On 1th axis, the dim size 64 is not divisible by block size 3. Unable to perform structured "
     "quantization."),
    (lambda p: compress.quantize_int4_block(p["conv18"], 100000), "int4 weights (linear symmetric, blocks of 100000)",
     "Invalid block_sizes; On 1th axis, the dim size 64 is not divisible by block size 100000. Unable to perform "
     "structured quantization."),
    (lambda p: compress.prune_n_m(p["conv16"], 2, 100000), "2:100000 pruning",
     "m > channel / 2 is not applicable for n:m pruning. Got m = 100000, channel = 64. Skipped."),
], ids=["group-3", "group-7", "group-100000", "int4-block-3", "int4-block-100000", "prune-2:100000"])
def test_a_setting_that_fits_no_weight_is_refused_with_coremltools_reason(p, call, summary, reason):
    # Was: exit 0, a program equal to the input, and the method recorded in its metadata.
    with pytest.raises(ValueError) as info:
        call(p)
    name = "conv18" if "conv18" in str(info.value) else "conv16"
    assert str(info.value) == (
        f"{summary} compresses none of the 1 weight(s) of {str(p[name])!r} that it could take (float, more than 2,048 "
        f"elements), so it is refused: coremltools skipped each one ({reason})")


@pytest.mark.parametrize("call", [lambda p: compress.quantize_int8(p["pal16"]), lambda p: compress.palettize(p["pal16"], 4),
                                  lambda p: compress.prune_magnitude(p["pal16"], 0.5)], ids=["int8", "palettize", "prune"])
def test_an_already_compressed_program_is_refused_before_any_work(p, call, monkeypatch):
    monkeypatch.setattr(compress.methods, "_run", lambda *a, **k: pytest.fail("compressed anyway"))
    with pytest.raises(ValueError) as info:
        call(p)
    assert str(info.value) == (f"{str(p['pal16'])!r} has no float weight of more than 2,048 elements to compress: it "
                               "already stores 1 weight(s) compressed (constexpr_* ops)")


def test_a_program_of_small_weights_is_refused_before_any_work():
    import torch

    from ane_vit.export import to_mlprogram

    model = to_mlprogram(torch.nn.Conv2d(8, 8, 1).eval(), torch.randn(1, 8, 4, 4))  # 64 weights, in memory
    with pytest.raises(ValueError) as info:
        compress.quantize_int8(model)
    assert str(info.value) == ("the program has no float weight of more than 2,048 elements to compress: coremltools "
                               "leaves smaller weights uncompressed")


@pytest.mark.parametrize("name, counts", [("nan16", "1 NaN, 0 infinite"), ("inf16", "0 NaN, 1 infinite")])
@pytest.mark.parametrize("call", [
    lambda path: compress.quantize_int8(path), lambda path: compress.prune_magnitude(path, 0.5),
    lambda path: compress.prune_n_m(path, 2, 4), lambda path: compress.palettize(path, 4),
], ids=["int8", "prune", "prune-2:4", "palettize"])
def test_non_finite_weights_are_refused(p, name, counts, call):
    # Was (int8, prune): exit 0 and a program of NaN.
    weight = next(op for op in load_program(p[name]).functions["main"].operations
                  if op.op_type == "const" and getattr(op.outputs[0].val, "size", 0) == 4096).name
    with pytest.raises(ValueError) as info:
        call(p[name])
    assert str(info.value) == (
        f"{str(p[name])!r} has 1 weight(s) with NaN or infinite values ({weight} (64, 64, 1, 1): {counts}): compressing "
        "them would write a program of NaN; fix the weights (a diverged training?) and export again")


def test_a_partial_compression_says_how_many_weights_it_compressed(p, tmp_path, capsys):
    out = compress.palettize(p["two18"], 4, group_size=16)  # fits the 64 output channels of y, not the 40 of a
    record = compress.compression_record(out)
    assert (record["weights_compressed"], record["weights_considered"]) == (1, 2)
    assert (record["elements_compressed"], record["elements_considered"]) == (2560, 5120)
    lut = [op for op in load_program(out).functions["main"].operations if op.op_type == "constexpr_lut_to_dense"]
    assert [op.outputs[0].shape for op in lut] == [(64, 40, 1, 1)]  # the compressed one is y's weight
    target = tmp_path / "two.mlpackage"
    assert main([str(p["two18"]), "--palettize", "4", "--group-size", "16", "-o", str(target)]) == 0
    line = capsys.readouterr().out
    assert line.rstrip().endswith("palettize 4 bits (k-means, groups of 16 channels); 1 of 2 weights (2,560 of 5,120 "
                                  "values) compressed")


@pytest.mark.parametrize("call, record", [
    (lambda p: compress.palettize(p["conv18"], np.int64(4), group_size=np.int64(16)), {"nbits": 4, "group_size": 16}),
    (lambda p: compress.quantize_int4_block(p["conv18"], np.int32(32)), {"block_size": 32}),
    (lambda p: compress.prune_n_m(p["conv16"], np.int64(2), np.int64(4)), {"n": 2, "m": 4}),
    (lambda p: compress.prune_magnitude(p["conv16"], np.float32(0.5)), {"sparsity": 0.5}),
], ids=["palettize", "int4-block", "prune-n:m", "prune"])
def test_numpy_numbers_are_accepted_and_recorded_as_python_numbers(p, call, record):
    # Was: "Object of type int64 is not JSON serializable", after the work (or np.float32 refused).
    got = compress.compression_record(call(p))
    assert {k: got[k] for k in record} == record
    assert all(type(got[k]) is type(v) for k, v in record.items())  # int / float, not numpy's
    assert got["weights_compressed"] == 1


@pytest.mark.parametrize("call, error, message", [
    (lambda p: compress.palettize(p["conv18"], 4, group_size=True), TypeError, "group_size must be a positive int, got True"),
    (lambda p: compress.palettize(p["conv18"], 4, group_size=16.0), TypeError, "group_size must be a positive int, got 16.0"),
    (lambda p: compress.quantize_int4_block(p["conv18"], 0), ValueError, "block_size must be a positive int, got 0"),
    (lambda p: compress.palettize(p["conv16"], np.float64(4)), ValueError, "nbits must be one of (1, 2, 4, 6, 8), got"),
    (lambda p: compress.prune_n_m(p["conv16"], 2.0, 4), ValueError, "n:m needs integers 0 < n < m, got 2.0:4"),
    (lambda p: compress.prune_magnitude(p["conv16"], True), ValueError, "sparsity must be a number strictly between 0 and 1"),
])
def test_bad_numbers_are_refused_before_the_program_is_read(p, call, error, message, monkeypatch):
    monkeypatch.setattr(compress.methods, "_load", lambda m: pytest.fail("read the program first"))
    with pytest.raises(error, match="^" + re.escape(message)):
        call(p)


def test_the_command_line_refuses_a_setting_that_fits_no_weight_and_writes_nothing(p, tmp_path, capsys):
    target = tmp_path / "out.mlpackage"
    with pytest.raises(SystemExit) as info:
        main([str(p["conv18"]), "--palettize", "4", "--group-size", "7", "-o", str(target)])
    assert info.value.code == 2
    assert "compresses none of the 1 weight(s)" in capsys.readouterr().err
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_the_command_line_refuses_to_write_over_its_input(p, tmp_path, capsys, overwrite):
    source = tmp_path / "in.mlpackage"
    shutil.copytree(p["conv16"], source)
    before = _digest(source)
    with pytest.raises(SystemExit) as info:
        main([str(source), "--int8", "-o", str(tmp_path / "." / "in.mlpackage"), *overwrite])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "python -m ane_vit.compress: error: the output must differ from the input"
    assert _digest(source) == before


@pytest.mark.parametrize("name", ["empty", "junk"])
def test_the_command_line_names_an_input_that_is_not_a_program(tmp_path, capsys, name):
    source = tmp_path / f"{name}.mlpackage"
    source.mkdir()
    if name == "junk":
        (source / "Manifest.json").write_text("{}")
    with pytest.raises(SystemExit) as info:
        main([str(source), "--int8", "-o", str(tmp_path / "out.mlpackage")])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"python -m ane_vit.compress: error: {str(source)!r} is ")
    assert not (tmp_path / "out.mlpackage").exists()


# --------------------------------------------------------------------------- nothing lost


def _copytree_interrupted_after_one_file(real_copytree, folder):
    """shutil.copytree, but a Ctrl-C (KeyboardInterrupt) after the first file copied into ``folder``."""
    def copytree(src, dst, *args, **kwargs):
        if len(args) >= 3 or "copy_function" in kwargs or not os.path.abspath(dst).startswith(str(folder) + os.sep):
            return real_copytree(src, dst, *args, **kwargs)
        copied = []

        def copy(a, b, **kw):
            if copied:
                raise KeyboardInterrupt
            copied.append(a)
            return shutil.copy2(a, b, **kw)

        return real_copytree(src, dst, copy_function=copy, **kwargs)

    return copytree


def test_ctrl_c_during_an_overwrite_keeps_the_old_program(p, tmp_path, monkeypatch, capsys):
    # Was: coremltools' save deleted the old package, then the copy stopped: the old program
    # was gone and a husk folder left (a re-run then refused with "already exists").
    folder = tmp_path / "keep"
    folder.mkdir()
    old = folder / "old.mlpackage"
    shutil.copytree(p["conv18"], old)
    before = _digest(old)
    monkeypatch.setattr(shutil, "copytree", _copytree_interrupted_after_one_file(shutil.copytree, folder))
    assert main([str(p["conv16"]), "--int8", "-o", str(old), "--overwrite"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "python -m ane_vit.compress: interrupted (Ctrl-C); nothing was written"
    assert _digest(old) == before
    assert sorted(q.name for q in folder.iterdir()) == ["old.mlpackage"]  # no staging folder left
    monkeypatch.undo()
    assert main([str(p["conv16"]), "--int8", "-o", str(old), "--overwrite"]) == 0  # a re-run replaces it
    assert compress.compression_record(old)["method"] == "int8"


def test_a_quoted_tilde_is_expanded_once_for_the_check_and_the_write(p, tmp_path, monkeypatch, capsys):
    # Was: the check saw a literal '~', coremltools expanded it and replaced $HOME/mine.mlpackage
    # without --overwrite, then the run crashed and left a folder named '~'.
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    mine = home / "mine.mlpackage"
    shutil.copytree(p["conv18"], mine)
    before = _digest(mine)
    with pytest.raises(SystemExit) as info:
        main([str(p["conv16"]), "--int8", "-o", "~/mine.mlpackage"])
    assert info.value.code == 2
    assert f"{mine} already exists; pass overwrite=True / --overwrite to replace it" in capsys.readouterr().err
    assert _digest(mine) == before and list(work.iterdir()) == []
    assert main([str(p["conv16"]), "--int8", "-o", "~/mine.mlpackage", "--overwrite"]) == 0
    assert capsys.readouterr().out.startswith(f"{mine}  ")
    assert compress.compression_record(mine)["method"] == "int8" and list(work.iterdir()) == []


def test_an_unwritable_output_is_refused_before_any_work(p, tmp_path, monkeypatch, capsys):
    afile = tmp_path / "afile"
    afile.write_text("a file where the output folder should be")
    monkeypatch.setattr(compress.methods, "quantize_int8", lambda *a: pytest.fail("compressed before checking the output"))
    with pytest.raises(SystemExit) as info:
        main([str(p["conv16"]), "--int8", "-o", str(afile / "out.mlpackage")])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m ane_vit.compress: error: [Errno 20] cannot write to the output folder ({afile} is a file, not a "
        f"folder); choose another folder: '{afile}'")
    import ane_vit.compress.study as study

    monkeypatch.setattr(study, "compression_study", lambda **k: pytest.fail("studied before checking the output"))
    with pytest.raises(SystemExit) as info:
        main(["study", "-o", str(afile / "out.json")])
    assert info.value.code == 2


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread only")
def test_a_ctrl_c_that_a_dependency_swallows_still_stops_the_command(p, tmp_path, monkeypatch, capsys):
    # coremltools imports scikit-learn, torch, scipy... inside bare `try: ... except:` blocks: a
    # Ctrl-C that arrives there is swallowed. Here one arrives inside such a block.
    real = compress.methods.quantize_int8

    def swallowing(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises here
        except:  # noqa: E722 (the dependency's bare except)
            pass
        return real(*args)

    monkeypatch.setattr(compress.methods, "quantize_int8", swallowing)
    target = tmp_path / "out.mlpackage"
    assert main([str(p["conv16"]), "--int8", "-o", str(target)]) == 130
    assert "interrupted (Ctrl-C); nothing was written" in capsys.readouterr().err
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_study_output_is_written_atomically(tmp_path, monkeypatch):
    import ane_vit.compress.study as study

    target = tmp_path / "study.json"
    target.write_text('{"old": true}\n')
    monkeypatch.setattr(study, "compression_study", lambda **k: {"rows": [1, 2]})
    monkeypatch.setattr(cli.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["study", "-o", str(target), "--overwrite"]) == 130
    assert json.loads(target.read_text()) == {"old": True} and [q.name for q in tmp_path.iterdir()] == ["study.json"]
    monkeypatch.undo()
    monkeypatch.setattr(study, "compression_study", lambda **k: {"rows": [1, 2]})
    assert main(["study", "-o", str(target), "--overwrite"]) == 0
    assert json.loads(target.read_text()) == {"rows": [1, 2]}


# --------------------------------------------------------------------------- analysis of compressed programs


def test_analysis_counts_the_weights_behind_constexpr_ops_and_names_the_method(p):
    from ane_vit.analysis import analyze

    # Stored bytes by hand, for the 64x64 float16 weight (8,192 bytes expanded):
    magnitude = np.abs(_weight().astype(np.float32))
    kept = int((magnitude > np.quantile(magnitude, 0.5, method="lower")).sum())  # prune_magnitude's rule: 2,047
    cases = {
        # 4,096 4-bit indices packed into bytes + a 16-entry float16 table + the shape (4 x uint32)
        "palettized 4-bit": (compress.palettize(p["conv16"], 4), 4096 * 4 // 8 + 16 * 2 + 4 * 4),
        # 4,096 int8 values + 64 float16 scales + 64 int8 zero points + the axis (int32)
        "int8 linear": (compress.quantize_int8(p["conv16"]), 4096 + 64 * 2 + 64 + 4),
        # a 4,096-bit mask + the float16 values kept + the shape (4 x uint32)
        "pruned to 50% sparsity": (compress.prune_magnitude(p["conv16"], 0.5), 4096 // 8 + kept * 2 + 4 * 4),
        # 4,096 int4 values + one float16 scale per block of 16 input channels (64 x 4)
        "int4 blockwise": (compress.quantize_int4_block(p["conv18"], 16), 4096 // 2 + 64 * 4 * 2),
        # 4,096 2-bit indices + four tables (one per 16 output channels) of 4 float16 entries
        "palettized 2-bit, grouped": (compress.palettize(p["conv18"], 2, group_size=16), 4096 * 2 // 8 + 4 * 4 * 2),
    }
    for method, (model, stored) in cases.items():
        report = analyze(model)
        assert [(w.method, w.shape, w.stored_bytes, w.dense_bytes) for w in report.compressed] == [
            (method, (64, 64, 1, 1), stored, 8192)], method
        summary = report.summary()
        assert (summary["compressed_weights"], summary["compressed_weight_bytes_stored"],
                summary["compressed_weight_bytes_dense"], summary["compression"]) == (1, stored, 8192, [method])
    float_program = analyze(p["conv16"])
    assert float_program.compressed == [] and float_program.summary()["compression"] == []
    assert "compressed weights: none (no constexpr_* op)" in float_program.table()


def test_a_joint_compression_is_one_weight_with_its_chain_of_constexpr_ops(p):
    import coremltools.optimize.coreml as cto

    from ane_vit.analysis import analyze

    pruned = compress.prune_magnitude(p["conv18"], 0.5)
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4, mode="kmeans"))
    joint = cto.palettize_weights(pruned, config, joint_compression=True)
    (w,) = analyze(joint).compressed
    assert w.op_types == ("constexpr_sparse_to_dense", "constexpr_lut_to_sparse")
    assert w.method == "pruned to 50% sparsity + palettized 4-bit"
    magnitude = np.abs(_weight().astype(np.float32))
    kept = int((magnitude > np.quantile(magnitude, 0.5, method="lower")).sum())
    # a 4,096-bit mask + the kept values' 4-bit indices (rounded up to whole bytes) + a 16-entry float16 table
    assert w.stored_bytes == 4096 // 8 + -(-kept // 2) + 16 * 2


def test_the_analysis_command_line_says_the_program_is_compressed(p, capsys):
    from ane_vit.analysis import main as analysis_main

    assert analysis_main([str(p["pal16"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index("compressed weights: 1 behind constexpr_* ops (palettized 4-bit):")
    assert lines[at + 1] == "  0.002 MB stored, 0.008 MB expanded (3.91x)"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread only")
def test_a_swallowed_ctrl_c_stops_the_analysis_command_line(p, monkeypatch, capsys):
    from ane_vit.analysis import cli as analysis_cli

    real = analysis_cli.analyze

    def swallowing(path):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except:  # noqa: E722 (a dependency's bare except)
            pass
        return real(path)

    monkeypatch.setattr(analysis_cli, "analyze", swallowing)
    assert analysis_cli.main([str(p["conv16"])]) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("python -m ane_vit.analysis: interrupted (Ctrl-C); nothing was written\n")


# --------------------------------------------------------------------------- asymmetric int8


def test_affine_dequantize_with_a_nonzero_zero_point_against_a_hand_computed_oracle():
    q = np.array([[-128, -1, 0, 5], [127, 3, -7, 0]], np.int8)  # (2, 4), quantized along axis 0
    scale = np.array([0.5, 0.25], np.float32)
    zero_point = np.array([-3, 10], np.int8)
    # scale * (q - zero_point), row by row, by hand:
    expected = np.array([[0.5 * (-128 + 3), 0.5 * (-1 + 3), 0.5 * (0 + 3), 0.5 * (5 + 3)],
                         [0.25 * (127 - 10), 0.25 * (3 - 10), 0.25 * (-7 - 10), 0.25 * (0 - 10)]], np.float32)
    got = CONSTEXPR_OPS["constexpr_affine_dequantize"](
        _Args(None, {"quantized_data": q, "scale": scale, "zero_point": zero_point, "axis": 0}))
    np.testing.assert_array_equal(got, expected)
    along_1 = CONSTEXPR_OPS["constexpr_affine_dequantize"](
        _Args(None, {"quantized_data": q.T, "scale": scale, "zero_point": zero_point, "axis": 1}))
    np.testing.assert_array_equal(along_1, expected.T)


def test_asymmetric_int8_program_runs_as_coremltools_expands_it(p):
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(p["conv16"]), skip_model_load=True)
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear", dtype="int8"))
    out = cto.linear_quantize_weights(model, config)
    (op,) = [o for o in load_program(out).functions["main"].operations if o.op_type == "constexpr_affine_dequantize"]
    zero_point = np.asarray(op.inputs["zero_point"].val)
    assert np.count_nonzero(zero_point) > 32  # asymmetric: most channels have a nonzero zero point
    values = {k: v.val for k, v in op.inputs.items()}
    ours = CONSTEXPR_OPS[op.op_type](_Args(op, values))
    np.testing.assert_array_equal(ours.astype(np.float16), np.asarray(op.materialized_val_inference()).astype(np.float16))
    x = np.random.default_rng(2).standard_normal((1, 64, 4, 4)).astype(np.float16)
    (ref,) = run_program(p["conv16"], {"x": x}).values()
    (got,) = run_program(out, {"x": x}).values()
    np.testing.assert_allclose(got, ref, atol=0.05 * float(np.abs(ref).max()))

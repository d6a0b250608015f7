"""ane_vit.compress and the interpreter's constexpr/quantize ops, on a small two-conv program.

The first conv has 73,728 weights: more than float16's largest finite value (65,504), which is
what makes coremltools 9.0's own magnitude pruning of a float16 program prune nothing.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from ane_vit import compress
from ane_vit.compress import main
from ane_vit.export import export_model, package_nbytes
from ane_vit.interpret import load_program, run_program
from ane_vit.interpret.op_table import _OPS
from ane_vit.interpret.ops import _Args
from ane_vit.testing import psnr

_CONSTEXPR = ("constexpr_lut_to_dense", "constexpr_affine_dequantize", "constexpr_sparse_to_dense",
              "constexpr_blockwise_shift_scale")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 64, 1)).eval()


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compress")
    x = torch.randn(1, 64, 8, 8)
    return {
        target: export_model(_model(), x, folder / f"small_{target}.mlpackage", minimum_deployment_target=target)
        for target in ("iOS16", "iOS18")
    }


_CASES = {
    "palettize 4": lambda p: compress.palettize(p["iOS16"], 4),
    "palettize 2": lambda p: compress.palettize(p["iOS16"], 2),
    "palettize 4 grouped": lambda p: compress.palettize(p["iOS18"], 4, group_size=16),
    "int8": lambda p: compress.quantize_int8(p["iOS16"]),
    "int4 block": lambda p: compress.quantize_int4_block(p["iOS18"], 32),
    "prune 0.5": lambda p: compress.prune_magnitude(p["iOS16"], 0.5),
    "prune 0.5 iOS18": lambda p: compress.prune_magnitude(p["iOS18"], 0.5),
    "prune 2:4": lambda p: compress.prune_n_m(p["iOS16"], 2, 4),
}


@pytest.fixture(scope="module")
def compressed(programs):
    return {name: fn(programs) for name, fn in _CASES.items()}


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_magnitude_pruning_of_a_float16_program_reaches_the_sparsity_asked(programs, sparsity, target):
    # Regression: coremltools 9.0's target_sparsity on float16 weights of > 65,504 elements
    # pruned nothing (np.percentile overflowed to NaN) and the file grew.
    out = compress.prune_magnitude(programs[target], sparsity)
    assert compress.weight_sparsity(out) == pytest.approx(sparsity, abs=0.005)
    ops = [op for op in load_program(out).functions["main"].operations if op.op_type == "constexpr_sparse_to_dense"]
    assert len(ops) == 2  # both convs are above the 2,048-element threshold


def test_each_output_records_what_was_done(compressed):
    records = {name: json.loads(m.user_defined_metadata["ane_vit.compression"]) for name, m in compressed.items()}
    assert records["palettize 4"] == {"method": "palettize", "nbits": 4, "group_size": None, "minimum_target": "iOS16",
                                      "coremltools": records["palettize 4"]["coremltools"],
                                      "weights_compressed": 2, "weights_considered": 2,
                                      "elements_compressed": 128 * 64 * 9 + 64 * 128, "elements_considered": 81920}
    for name, record in records.items():  # both convs' weights (73,728 and 8,192 values), whatever the method
        assert (record["weights_compressed"], record["elements_compressed"]) == (2, 81920), name
    assert records["palettize 4 grouped"]["method"] == "palettize-grouped"
    assert records["palettize 4 grouped"]["minimum_target"] == "iOS18"
    assert records["int4 block"]["block_size"] == 32
    assert records["prune 0.5"]["sparsity"] == 0.5
    assert records["prune 2:4"]["n"] == 2 and records["prune 2:4"]["m"] == 4


@pytest.mark.parametrize("name", list(_CASES))
def test_constexpr_ops_expand_as_coremltools_does(compressed, name):
    func = load_program(compressed[name]).functions["main"]
    ops = [op for op in func.operations if op.op_type in _CONSTEXPR]
    assert ops, f"{name} produced no constexpr op"
    for op in ops:
        values = {k: v.val for k, v in op.inputs.items()}
        ours = np.asarray(_OPS[op.op_type](_Args(op, values)), np.float32)
        theirs = np.asarray(op.materialized_val_inference(), np.float32)
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours.astype(np.float16), theirs.astype(np.float16), err_msg=f"{name}: {op.op_type}")


@pytest.mark.parametrize("name, min_db", [("palettize 4", 25), ("palettize 4 grouped", 25), ("int8", 35),
                                          ("int4 block", 20), ("prune 2:4", 5)])
def test_compressed_programs_run_close_to_the_float16_program(programs, compressed, name, min_db):
    x = np.random.default_rng(0).standard_normal((1, 64, 8, 8)).astype(np.float32)
    (ref,) = run_program(programs["iOS16"], {"x": x}).values()
    (out,) = run_program(compressed[name], {"x": x}).values()
    assert min_db < psnr(ref, out) < 200  # changed, but not destroyed


def test_quantize_and_dequantize_ops_follow_the_mil_definition():
    from coremltools.optimize._utils import dequantize_by_scale_and_zp, quantize_by_scale_and_zp

    x = np.array([[-3.1, -0.25, 0.25, 0.75, 2.5, 400.0]], np.float32)
    scale, zp = np.float32(0.5), np.int8(3)
    ours = _OPS["quantize"](_Args(None, {"input": x, "scale": scale, "zero_point": zp, "output_dtype": "int8"}))
    theirs = quantize_by_scale_and_zp(x, scale, zp, "int8")
    np.testing.assert_array_equal(ours, theirs)
    assert ours.dtype == np.int8 and ours[0, -1] == 127  # clipped
    back = _OPS["dequantize"](_Args(None, {"input": ours, "scale": scale, "zero_point": zp}))
    np.testing.assert_allclose(back, dequantize_by_scale_and_zp(theirs, scale, zp))


def test_iOS18_methods_refuse_an_iOS16_program_with_the_fix(programs):
    with pytest.raises(ValueError, match=r"--deployment-target iOS18` \(in Python: minimum_deployment_target='iOS18'\)"):
        compress.quantize_int4_block(programs["iOS16"], 32)
    with pytest.raises(ValueError, match="iOS18"):
        compress.palettize(programs["iOS16"], 4, group_size=16)


@pytest.mark.parametrize("bad, match", [(dict(nbits=3), "nbits must be one of"), (dict(nbits=4, group_size=0), "group_size")])
def test_palettize_rejects_bad_arguments(programs, bad, match):
    with pytest.raises(ValueError, match=match):
        compress.palettize(programs["iOS16"], **bad)


def test_cli_writes_one_line_and_never_overwrites_silently(programs, tmp_path, capsys):
    out = tmp_path / "p4.mlpackage"
    assert main([str(programs["iOS16"]), "--palettize", "4", "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(out)) and "palettize 4 bits" in line and len(line.splitlines()) == 1
    assert package_nbytes(out) < package_nbytes(programs["iOS16"]) / 3
    assert compress.compression_record(out)["nbits"] == 4
    with pytest.raises(SystemExit) as err:
        main([str(programs["iOS16"]), "--int8", "-o", str(out)])
    assert err.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(programs["iOS16"]), "--prune", "2:4", "-o", str(out), "--overwrite"]) == 0
    assert compress.compression_record(out)["method"] == "prune-n:m"


@pytest.mark.parametrize("argv, message", [
    (["--prune", "1.5"], "strictly between 0 and 1"),
    (["--prune", "4:2"], "0 < N < M"),
    (["--int8", "--group-size", "8"], "--group-size goes with --palettize"),
    (["--int4-block", "32"], "iOS18"),
    (["--palettize", "3"], "invalid choice"),
])
def test_cli_errors_are_clear(programs, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        main([str(programs["iOS16"]), *argv, "-o", str(tmp_path / "out.mlpackage")])
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_w8a8_inserts_calibrated_quantize_pairs_that_the_interpreter_runs(programs):
    rng = np.random.default_rng(1)
    samples = [{"x": rng.standard_normal((1, 64, 8, 8)).astype(np.float32)} for _ in range(3)]
    ranges = compress.activation_ranges(programs["iOS16"], samples)
    lows = min(float(s["x"].astype(np.float16).min()) for s in samples)
    assert ranges["x"]["rmin"] == lows  # the input's range over all samples
    out = compress.quantize_activations(programs["iOS16"], samples)
    types = [op.op_type for op in load_program(out).functions["main"].operations]
    assert types.count("quantize") >= 1 and types.count("dequantize") >= 1
    assert "constexpr_affine_dequantize" in types  # int8 weights too
    assert compress.compression_record(out)["method"] == "w8a8"
    (ref,) = run_program(programs["iOS16"], samples[0]).values()
    (got,) = run_program(out, samples[0]).values()
    assert 25 < psnr(ref, got) < 200
    with pytest.raises(ValueError, match="samples is empty"):
        compress.activation_ranges(programs["iOS16"], [])


def test_pareto_front_keeps_only_the_points_nothing_beats():
    from ane_vit.compress.plots import pareto_front

    points = [(100, 0.99), (50, 0.99), (60, 0.5), (20, 0.1), (80, 1.0), (50, 0.98), (70, 0.99)]
    assert pareto_front(points) == [3, 1, 4]  # by size: 20 -> 0.1, 50 -> 0.99, 80 -> 1.0; (70, 0.99) is no better
    assert pareto_front([]) == []

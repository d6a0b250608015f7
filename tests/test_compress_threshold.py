"""The weight_threshold option of ane_vit.compress (API and --weight-threshold), and the size breakdown.

A small program with one conv above coremltools' 2,048-element threshold (16*32*3*3 = 4,608
weights), one rank-4 conv below it (32*16 = 512 weights) and rank-1 biases.
"""


import pytest
import torch
from torch import nn

from ane_vit import compress
from ane_vit.compress import main
from ane_vit.digits.threshold import size_breakdown
from ane_vit.export import export_model, package_nbytes
from ane_vit.interpret import load_program


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 1)).eval()
    return export_model(model, torch.randn(1, 16, 8, 8), tmp_path_factory.mktemp("thr") / "small.mlpackage")


def _compressed_shapes(model, op_type):
    """Shapes of the weights behind ``op_type`` constexpr ops, sorted."""
    func = load_program(model).functions["main"]
    return sorted(tuple(op.outputs[0].shape) for op in func.operations if op.op_type == op_type)


@pytest.mark.parametrize("fn, op_type", [
    (lambda p, **kw: compress.palettize(p, 4, **kw), "constexpr_lut_to_dense"),
    (lambda p, **kw: compress.quantize_int8(p, **kw), "constexpr_affine_dequantize"),
    (lambda p, **kw: compress.prune_magnitude(p, 0.5, **kw), "constexpr_sparse_to_dense"),
])
def test_threshold_decides_which_constants_are_compressed(program, fn, op_type):
    default = fn(program)
    everything = fn(program, weight_threshold=0)
    assert _compressed_shapes(default, op_type) == [(32, 16, 3, 3)]  # only the 4,608-weight conv
    assert _compressed_shapes(everything, op_type) == [(16, 32, 1, 1), (32, 16, 3, 3)]  # biases (rank 1) never
    assert compress.compression_record(default).get("weight_threshold") is None  # the default is not written
    assert compress.compression_record(everything)["weight_threshold"] == 0
    assert "constants > 0 elements" in compress.record_summary(compress.compression_record(everything))


def test_threshold_just_below_a_size_includes_it(program):
    # coremltools compresses a constant when its size is MORE than the threshold: 512 > 511, not 512 > 512
    assert _compressed_shapes(compress.palettize(program, 4, weight_threshold=511), "constexpr_lut_to_dense") == [
        (16, 32, 1, 1), (32, 16, 3, 3)]
    assert _compressed_shapes(compress.palettize(program, 4, weight_threshold=512), "constexpr_lut_to_dense") == [
        (32, 16, 3, 3)]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "0"])
def test_bad_threshold_is_refused_by_name(program, bad):
    with pytest.raises(ValueError) as info:
        compress.quantize_int8(program, weight_threshold=bad)
    assert str(info.value) == f"weight_threshold must be an int >= 0 (elements), got {bad!r}"


def test_cli_weight_threshold(program, tmp_path, capsys):
    out = tmp_path / "p4_all.mlpackage"
    assert main([str(program), "--palettize", "4", "--weight-threshold", "0", "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.endswith("palettize 4 bits (k-means, per tensor), constants > 0 elements; "
                         "2 of 2 weights (5,120 of 5,120 values) compressed")
    assert compress.compression_record(str(out))["weight_threshold"] == 0
    assert _compressed_shapes(str(out), "constexpr_lut_to_dense") == [(16, 32, 1, 1), (32, 16, 3, 3)]
    with pytest.raises(SystemExit) as info:
        main([str(program), "--int8", "--weight-threshold", "-5", "-o", str(tmp_path / "x.mlpackage")])
    assert info.value.code == 2
    assert "--weight-threshold must be >= 0 (elements), got -5" in capsys.readouterr().err
    assert not (tmp_path / "x.mlpackage").exists()


def test_size_breakdown_sums_to_the_package_and_sorts_the_constants(program, tmp_path):
    dense = size_breakdown(program)
    assert dense["total"] == package_nbytes(program)
    assert sum(v for k, v in dense.items() if k != "total") == dense["total"]
    # float16: 4,608 weights above the threshold, 512 below, biases 32 + 16
    assert (dense["float16 large"], dense["float16 small"], dense["rank-1"], dense["compressed"]) == (9216, 1024, 96, 0)
    path = tmp_path / "p4.mlpackage"
    compress.palettize(program, 4).save(str(path))
    p4 = size_breakdown(path)
    assert p4["total"] == package_nbytes(path) and p4["float16 large"] == 0 and p4["float16 small"] == 1024
    assert p4["compressed"] == 4608 // 2 + 16 * 2  # 4-bit indices + a table of 16 float16 values
    assert 0 <= p4["headers and alignment"] < 64 * 8 and p4["description"] > 0

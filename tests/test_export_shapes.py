"""Several input sizes in one program: ane_vit.export's enumerated shapes, read back by analyze."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from ane_vit import PEType
from ane_vit.analysis import analyze
from ane_vit.export import (
    MAX_ENUMERATED_SHAPES,
    enumerated_filename,
    export_moat,
    main,
    read_metadata,
    to_mlprogram,
)
from ane_vit.export.shapes import (
    check_enumerated_shapes,
    check_materializes,
    fixed_size_layers,
    materialization_errors,
)
from ane_vit.moat import MOATBlock
from ane_vit.testing import assert_parity, randomize_

# Reloading a saved flexible program, coremltools notes the flexible dimensions it was asked for.
pytestmark = pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown:UserWarning")


def _block(pe_type, window=(4, 4)):
    """Patchify 4x4 then one global MOAT block: 16x16 pixels -> a 4x4 map (16 tokens)."""
    model = nn.Sequential(nn.Conv2d(3, 32, 4, stride=4), MOATBlock(32, 32, window, pe_type=pe_type))
    return randomize_(model, seed=0).eval()


def _materialized_main(mlmodel, shape, tmp_path):
    """The program fixed at ``shape`` (coremltools replaces 'main' with the fixed function)."""
    import coremltools as ct

    src, dst = tmp_path / "flex.mlpackage", tmp_path / f"fixed_{shape[-1]}.mlpackage"
    mlmodel.save(str(src))
    ct.utils.materialize_dynamic_shape_mlmodel(ct.models.MLModel(str(src), skip_model_load=True), {"main": {"x": shape}}, str(dst))
    return dst


@pytest.mark.parametrize("pe_type", [PEType.LePE_FUSED, PEType.NONE])
def test_two_enumerated_shapes_convert_and_compute_the_model_at_each_size(pe_type, tmp_path):
    from ane_vit.interpret import run_program

    model = _block(pe_type)
    mlmodel = to_mlprogram(model, torch.rand(1, 3, 16, 16), compute_precision="float32",
                           enumerated_shapes=[(1, 3, 16, 16), (1, 3, 32, 32)], output_names=["y"])
    inp = mlmodel.get_spec().description.input[0].type.multiArrayType
    assert [tuple(s.shape) for s in inp.enumeratedShapes.shapes] == [(1, 3, 16, 16), (1, 3, 32, 32)]
    report = analyze(mlmodel)
    (finding,) = [f for f in report.findings if f.rule == "flexible_input_shape"]
    assert finding.severity == "info" and "enumerated" in finding.message and "(1, 3, 32, 32)" in finding.message
    # The same weights at the second size: a model built for 8x8 tokens, against the program fixed at 32x32.
    big = nn.Sequential(nn.Conv2d(3, 32, 4, stride=4), MOATBlock(32, 32, (8, 8), pe_type=pe_type)).eval()
    big.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 32, 32)
    out = run_program(_materialized_main(mlmodel, (1, 3, 32, 32), tmp_path), {"x": x.numpy()})["y"]
    with torch.no_grad():
        ref = big(x).numpy()
    assert out.shape == ref.shape == (1, 32, 8, 8)
    assert_parity(torch.from_numpy(ref), torch.from_numpy(out.astype(np.float32)), min_psnr=60.0, name="y at 32x32")


@pytest.mark.parametrize("pe_type", [PEType.LePE_ADD, PEType.RPE, PEType.SINGLE_HEAD_RPE])
def test_pe_types_sized_for_one_token_count_are_refused(pe_type):
    with pytest.raises(ValueError, match=rf"1 attention layer\(s\) use a position embedding sized for one token count: 1.attention \({pe_type.name}\)"):
        to_mlprogram(_block(pe_type), torch.rand(1, 3, 16, 16), enumerated_shapes=[(1, 3, 16, 16), (1, 3, 32, 32)])


def test_a_baked_constant_is_caught_after_conversion():
    # Without the checks, the conversion succeeds; the program cannot be fixed at 32x32.
    shapes = [(1, 3, 16, 16), (1, 3, 32, 32)]
    mlmodel = to_mlprogram(_block(PEType.LePE_ADD), torch.rand(1, 3, 16, 16), enumerated_shapes=shapes, check_shapes=False)
    errors = materialization_errors(mlmodel, "x", shapes)
    assert errors[(1, 3, 16, 16)] is None and "Incompatible dim" in errors[(1, 3, 32, 32)]
    with pytest.raises(ValueError, match=r"cannot take the enumerated shape \(1, 3, 32, 32\): Incompatible dim"):
        check_materializes(mlmodel, "x", shapes)


def test_to_mlprogram_checks_every_size_it_did_not_trace_at(monkeypatch):
    # The layer check is the first line of defence; with it blinded, the check after conversion
    # must still refuse a program that cannot be fixed at an enumerated size it was not traced at
    # (it skips only the traced size, which always fits).
    monkeypatch.setattr("ane_vit.export.shapes.fixed_size_layers", lambda module: [])
    shapes = [(1, 3, 16, 16), (1, 3, 32, 32)]
    with pytest.raises(ValueError, match=r"cannot take the enumerated shape \(1, 3, 32, 32\): Incompatible dim"):
        to_mlprogram(_block(PEType.LePE_ADD), torch.rand(1, 3, 16, 16), enumerated_shapes=shapes)


def test_enumerated_shape_errors():
    default = (1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"lists \[\(1, 3, 16, 16\)\] more than once"):
        check_enumerated_shapes([default, (1, 3, 32, 32), default], default)
    with pytest.raises(ValueError, match=r"at least 2 shapes"):
        check_enumerated_shapes([default], default)
    with pytest.raises(ValueError, match=rf"at most {MAX_ENUMERATED_SHAPES} enumerated shapes per input, got 129"):
        check_enumerated_shapes([(1, 3, 16, 16 + 32 * i) for i in range(129)], default)
    check_enumerated_shapes([(1, 3, 16, 16 + 32 * i) for i in range(128)], default)  # the limit itself is fine
    with pytest.raises(ValueError, match=r"must be one of the enumerated shapes"):
        check_enumerated_shapes([(1, 3, 32, 32), (1, 3, 64, 64)], default)
    with pytest.raises(ValueError, match=r"tuple of positive ints, got \(1, 3, 0, 16\)"):
        check_enumerated_shapes([default, (1, 3, 0, 16)], default)
    with pytest.raises(ValueError, match=r"rank 3, the example input \(1, 3, 16, 16\) rank 4"):
        check_enumerated_shapes([default, (3, 16, 16)], default)
    with pytest.raises(ValueError, match="needs a module with one input"):
        to_mlprogram(nn.Identity(), (torch.rand(1, 3), torch.rand(1, 3)), enumerated_shapes=[(1, 3), (2, 3)])
    assert fixed_size_layers(_block(PEType.NONE)) == []


def test_export_moat_and_cli_with_enumerated_sizes(tmp_path, capsys, monkeypatch):
    shapes = [(1, 3, 64, 64), (1, 3, 96, 96)]
    calls = []
    monkeypatch.setattr("ane_vit.export.save.export_model", lambda model, ex, path, **kw: calls.append((path, kw)) or path)
    path = export_moat("tiny-moat-0", shapes[0], pe_type="LePE_FUSED", output_dir=tmp_path, enumerated_shapes=shapes)
    assert path.name == "tiny-moat-0_globalAttn_batch1_64x64_PEType.LePE_FUSED_split-head_True_sizes-64x64-96x96.mlpackage"
    assert calls[0][1]["enumerated_shapes"] == shapes
    assert main(["--dry-run", "--size", "64", "64", "--size", "96", "96", "--enumerated-sizes", "--pe-type", "NONE",
                 "--output-dir", str(tmp_path)]) == 0
    cfg = {"base_arch": "tiny-moat-0", "attention_mode": "global", "pe_type": PEType.NONE, "split_head": True}
    assert capsys.readouterr().out.split() == [str(tmp_path / enumerated_filename(cfg, shapes))]
    for argv, message in [
        (["--size", "64", "64", "--size", "96", "96", "--enumerated-sizes"], "needs --pe-type LePE_FUSED or NONE"),
        (["--size", "64", "64", "--enumerated-sizes", "--pe-type", "NONE"], "at least two different"),
        (["--size", "64", "64", "--size", "96", "96", "--enumerated-sizes", "--pe-type", "NONE", "--attention-mode", "local"],
         "global attention only"),
    ]:
        with pytest.raises(SystemExit):
            main(["--dry-run", *argv])
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_export_moat_two_sizes_saved_and_analyzed(tmp_path):
    shapes = [(1, 3, 32, 32), (1, 3, 64, 64)]  # micro-moat: the same code path as any MOAT, a few seconds
    path = export_moat("micro-moat", shapes[0], pe_type="NONE", output_dir=tmp_path, enumerated_shapes=shapes)
    assert json.loads(read_metadata(path)["user_defined"]["ane_vit.enumerated_shapes"]) == [list(s) for s in shapes]
    assert any(f.rule == "flexible_input_shape" for f in analyze(path).findings)


def test_analyze_names_a_range_and_reads_one_function_of_a_multifunction_program(tmp_path):
    import coremltools as ct

    traced = torch.jit.trace(nn.ReLU().eval(), torch.randn(1, 4, 8))
    ranged = ct.convert(traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                        inputs=[ct.TensorType(name="x", shape=(1, 4, ct.RangeDim(1, 64, default=8)))])
    (finding,) = analyze(ranged).findings
    assert finding.message == "input 'x' has a range (not fixed) shape: (1, 4, 1..64)"
    src, multi = tmp_path / "ranged.mlpackage", tmp_path / "multi.mlpackage"
    ranged.save(str(src))
    ct.utils.materialize_dynamic_shape_mlmodel(
        ct.models.MLModel(str(src), skip_model_load=True), {"n8": {"x": (1, 4, 8)}, "n32": {"x": (1, 4, 32)}}, str(multi)
    )
    report = analyze(multi, function="n32")
    assert report.inputs[0].shape == (1, 4, 32) and report.outputs[0].shape == (1, 4, 32)
    assert not report.findings and "function 'n32'" in report.source
    with pytest.raises(ValueError, match=r"no function 'n16'; it has \['main', 'n32', 'n8'\]"):
        analyze(multi, function="n16")


def test_cli_validates_every_enumerated_size_before_converting(capsys):
    from ane_vit.export import main

    with pytest.raises(SystemExit) as exc:
        main(["--dry-run", "--size", "64", "64", "--size", "100", "100", "--enumerated-sizes", "--pe-type", "NONE"])
    assert exc.value.code == 2
    assert "batch 1, 100x100: image height and width must be positive multiples of 32" in capsys.readouterr().err

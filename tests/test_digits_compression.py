"""Chapter 8's compression with fine-tuning, cross-validation and threshold study: the pieces that run in seconds.

The training runs themselves are commands whose results are committed (results/digits_*.json);
tests/test_digits_results.py checks those files against each other and against the data.
"""

import numpy as np
import pytest
import torch
from torch import nn

from ane_vit import compress
from ane_vit.digits import load_data, load_model, main
from ane_vit.digits.finetune import _store_zeros_sparse, compressible_modules, fold_batch_norms
from ane_vit.export import export_model
from ane_vit.interpret import load_program
from ane_vit.layers import MBConv


@pytest.fixture(scope="module")
def x_test():
    return load_data()[2][:8]


def test_fold_batch_norms_keeps_the_function_and_leaves_identities(x_test):
    reference = load_model("reference")
    folded = fold_batch_norms(load_model("reference"))
    with torch.no_grad():
        a, b = reference(x_test), folded(x_test)
    assert (a - b).abs().max() < 1e-4 * a.abs().max()
    blocks = [m for m in folded.modules() if isinstance(m, MBConv)]
    assert len(blocks) == 5
    for block in blocks:
        for bn in (block.pre_norm, block.expand_norm, block.depthwise_norm, block.project_norm):
            assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            assert torch.allclose(scale, torch.ones_like(scale), atol=1e-6)  # the converter's fold multiplies by ~1
    assert torch.equal(folded.stem[2].running_var, reference.stem[2].running_var)  # before a padded 3x3 conv: kept


def test_fold_batch_norms_moves_the_scales_into_the_weights():
    reference = load_model("reference")
    block = reference.stages[0][0]
    bn = block.depthwise_norm
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    expected = block.depthwise.weight.detach() * scale.reshape(-1, 1, 1, 1)
    fold_batch_norms(reference)
    assert torch.allclose(block.depthwise.weight, expected)


def test_compressible_modules_are_the_weights_above_the_threshold():
    model = load_model("reference")
    names = compressible_modules(model)
    modules = dict(model.named_modules())
    assert len(names) == 21 and "stem.3" in names and "stem.0" not in names
    assert all(modules[n].weight.numel() > 2048 for n in names)
    assert "stages.1.0.shortcut_conv" not in names  # exactly 2,048 weights: coremltools skips it too
    assert compressible_modules(model, weight_threshold=0)[:2] == ["stem.0", "stem.3"]


def test_store_zeros_sparse_keeps_every_nonzero(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 1)).eval()
    with torch.no_grad():
        w = model[0].weight
        w[w.abs() < w.abs().median()] = 0.0  # half zeros, as a fine-tuned 50 % pruner leaves them
    program = export_model(model, torch.randn(1, 32, 8, 8), tmp_path / "half.mlpackage")
    out = _store_zeros_sparse(program, "prune", {"sparsity": 0.5})
    ops = [op for op in load_program(out).functions["main"].operations if op.op_type == "constexpr_sparse_to_dense"]
    assert len(ops) == 1  # the 1x1 conv has no zeros (and 512 weights): left dense
    dense = np.asarray(ops[0].materialized_val_inference(), np.float32)
    np.testing.assert_array_equal(dense, model[0].weight.detach().numpy().astype(np.float16).astype(np.float32))
    assert compress.weight_sparsity(out) == pytest.approx(0.5, abs=1e-3)
    assert compress.compression_record(out)["threshold"] == "zeros left by fine-tuning, stored exactly"


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--methods", "prune 90 %"], "--methods takes names from ['prune 50 %', 'prune 2:4', 'palettize 2 bit'], got 'prune 90 %'"),
    (["crossval", "--folds", "1"], "folds must be an int in 2..20, got 1"),
])
def test_new_subcommands_refuse_bad_settings_before_any_work(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--output", str(tmp_path / "out.json")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("command", ["finetune", "crossval", "threshold"])
def test_new_subcommands_never_replace_results_without_overwrite(tmp_path, capsys, command):
    existing = tmp_path / "kept.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit):
        main([command, "--output", str(existing)])
    assert f"{existing} already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert existing.read_text() == "{}"


def test_with_statistics_counts_by_hand():
    from ane_vit.digits.report import decode_labels, short_label, with_statistics
    from ane_vit.stats import wilson_interval

    truth, base = "0123456789", "0123456788"  # baseline: 9 right (the last image wrong)
    rows = [{"stage": "program palettize 4 bit", "labels": "0123456789"},   # 10 right: c = 1
            {"stage": "program prune 2:4", "labels": "1111456788"}]         # right on 1, 4..8: 6
    a, b = with_statistics(rows, truth, base)
    assert (a["correct"], a["b"], a["c"], a["p_value"]) == (10, 0, 1, 1.0)
    assert a["ci"] == wilson_interval(10, 10) and a["n"] == 10
    assert (b["correct"], b["b"], b["c"]) == (6, 3, 0)  # right under the baseline only: images 0, 2, 3
    assert b["p_value"] == pytest.approx(2 / 2**3)
    assert [short_label(r["stage"]) for r in rows] == ["4-bit", "2:4"]
    assert short_label("program palettize 2 bit, fine-tuned") == "2-bit FT"
    assert decode_labels("0907") == [0, 9, 0, 7]
    with pytest.raises(ValueError, match="labels must be a string of digits 0..9"):
        decode_labels("09a7")
    with pytest.raises(ValueError, match="program prune 2:4: 3 labels for 10 images"):
        with_statistics([{"stage": "program prune 2:4", "labels": "012"}], truth, base)


def test_predict_in_float16_leaves_the_model_untouched(x_test):
    from ane_vit.digits.evaluate import predict

    model = load_model("reference")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predict(model, x_test[:2], torch.float16)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)

"""The converted programs stay as lean as issue 11 asks: tiny-moat-0 at 256x256, float16 ML
Program for iOS16, trained-looking weights (``randomize_``: a fresh model's identity
LayerNorms and zero embeddings would be removed by the converter and shrink the counts).

Each test exports one whole model (a few seconds); the numbers are facts about the program
(``ane_vit.analysis``), not latency."""

import inspect

import pytest
import torch

from ane_vit.analysis import LAYOUT_OPS, analyze
from ane_vit.export import to_mlprogram
from ane_vit.moat import MOATBlock, build_model, moat_config
from ane_vit.testing import randomize_

# Targets of issue 11 (the seed's programs: 584 ops; ours before: 442 global, 522 / 153 layout
# ops / 72.2 MB padded activations local).
GLOBAL_LEPE_MAX_OPS = 420
LOCAL_MAX_OPS = 470
LOCAL_MAX_LAYOUT_OPS = 120
LOCAL_MAX_PADDED_BYTES = 72.2e6


def _report(**kwargs):
    _, model = build_model((1, 3, 256, 256), "tiny-moat-0", **kwargs)
    model = randomize_(model, seed=0).eval()
    return analyze(to_mlprogram(model, torch.rand(1, 3, 256, 256)))


def _producers(report):
    return {t.name: op for op in report.ops for t in op.outputs}


@pytest.fixture(scope="module")
def global_lepe():
    return _report(attention_mode="global", pe_type="LePE_ADD")


@pytest.fixture(scope="module")
def local_rpe():
    # issue 11's targets are for the channels-first route (windows along axis 2); the default
    # is now the seed's route, which writes fewer width-moving bytes (issue 17, chapter 5)
    return _report(attention_mode="local", local_window_size=(8, 8), pe_type="SINGLE_HEAD_RPE", local_layout="channels_first")


def test_global_lepe_add_program_has_at_most_420_ops(global_lepe):
    summary = global_lepe.summary()
    assert summary["ops"] <= GLOBAL_LEPE_MAX_OPS, global_lepe.histogram()
    assert summary["max_rank"] <= 5


def test_norms_add_no_batch_norm_ops(global_lepe):
    # LayerNormANE converts to one layer_norm carrying weight and bias (no batch_norm after it),
    # and every MBConv pre-norm is folded into its expand conv.
    hist = global_lepe.histogram()
    assert hist["layer_norm"] == 9  # 9 MOAT blocks, one norm each
    assert hist["batch_norm"] <= 1  # only the stem's (it sits before a padded 3x3 conv)


def test_local_program_targets(local_rpe):
    summary = local_rpe.summary()
    hist = local_rpe.histogram()
    assert summary["ops"] <= LOCAL_MAX_OPS, hist
    assert summary["layout_ops"] == sum(n for op, n in hist.items() if op in LAYOUT_OPS)
    assert summary["layout_ops"] <= LOCAL_MAX_LAYOUT_OPS, hist
    assert summary["activation_bytes_padded"] <= LOCAL_MAX_PADDED_BYTES
    assert summary["max_rank"] <= 5
    # 7 stage-3 blocks (4 windows: partition, keys, reverse) + 2 stage-4 blocks (one window: keys)
    assert hist["transpose"] <= 3 * 7 + 2


def _block_report(**kwargs):
    """A stage-3 MOAT block of tiny-moat-0 at 256x256 (16x16 map, 128 channels, 4 windows of
    8x8), converted alone: the local routes differ only inside such blocks, at a fraction of a
    whole model's conversion time."""
    block = MOATBlock(128, 128, window_size=(8, 8), attention_mode="local", pe_type="SINGLE_HEAD_RPE", **kwargs)
    return analyze(to_mlprogram(randomize_(block, seed=0).eval(), torch.randn(1, 128, 16, 16)))


def test_the_default_local_route_writes_fewer_width_moving_bytes():
    """The local default (the seed's route, windows on the batch axis) was chosen on the bytes
    its layout ops write while moving the last axis, every intermediate padded (Apple's
    'design for the worst case'); the channels-first route has fewer ops and transposes. The
    whole models' numbers are committed (results/local_routes.json, test_bench_routes)."""
    defaults = {f.__name__: inspect.signature(f).parameters["local_layout"].default
                for f in (build_model, moat_config, MOATBlock)}
    assert defaults == dict.fromkeys(defaults, "channels_last")
    default = _block_report()
    axis2 = _block_report(local_layout="channels_first")
    d, a = default.summary(), axis2.summary()
    assert d["layout_bytes_moving_width_padded"] < a["layout_bytes_moving_width_padded"]  # the deciding number
    assert d["layout_bytes_moving_width_padded_lower"] <= a["layout_bytes_moving_width_padded_lower"]
    assert d["activation_bytes_padded"] < a["activation_bytes_padded"]
    # where the default loses: 7 transposes per block against 3, more ops and layout ops,
    # rank 5 (the partition) against 4, more bytes once intermediates are dense
    assert default.histogram()["transpose"] == 7
    assert axis2.histogram()["transpose"] == 3
    assert a["ops"] < d["ops"] and a["layout_ops"] < d["layout_ops"]
    assert (a["max_rank"], d["max_rank"]) == (4, 5)
    assert a["activation_bytes_padded_lower"] < d["activation_bytes_padded_lower"]

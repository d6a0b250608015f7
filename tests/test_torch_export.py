"""Every model of the package goes through ``torch.export`` (the entry of Core AI, PT2E
quantization and ExecuTorch), with torch.export's defaults and with ``strict=True``.

The exported program must compute what the eager model computes; the LayerNorm's affine
order, which depends on weight values, is decided outside ``forward`` (``ane_vit.norm``).
The default run exports a representative set; ``--run-export-sweep`` exports every registry
architecture in both attention modes and both local layouts, and every ``PEType`` with
``split_head`` on and off.
"""

import pytest
import torch

from ane_vit import ARCHITECTURES, PEType, build_deit, build_model
from ane_vit.deit import DeiTConfig
from ane_vit.norm import LayerNormANE
from ane_vit.reference.deit import ReferenceDeiT
from ane_vit.reference.moat import build_reference_model
from ane_vit.testing import assert_parity, randomize_


def _export_and_compare(model, x, strict=False, atol=1e-5):
    model = model.eval()
    with torch.no_grad():
        expected = model(x)
    ep = torch.export.export(model, (x,), strict=strict)
    with torch.no_grad():
        got = ep.module()(x)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    got = got if isinstance(got, (list, tuple)) else [got]
    assert [tuple(g.shape) for g in got] == [tuple(e.shape) for e in expected]
    for e, g in zip(expected, got):
        assert_parity(e, g, atol=atol)
    return ep


def _moat(kind="ane", size=128, **kw):
    kw.setdefault("num_blocks", (1, 1, 1, 1))
    build = build_model if kind == "ane" else build_reference_model
    _, model = build((1, 3, size, size), **kw)
    torch.manual_seed(0)
    randomize_(model)  # non-trivial norms and embeddings: what a trained model has
    return model


REPRESENTATIVE = {
    "global-lepe-add-split": dict(base_arch="tiny-moat-0", attention_mode="global"),
    "local-rpe-axis2-nosplit": dict(
        base_arch="tiny-moat-1", attention_mode="local", pe_type=PEType.RPE, split_head=False,
        local_window_size=(8, 8), output_stride=16,
    ),
    "local-shrpe-seed-route": dict(
        base_arch="tiny-moat-0", attention_mode="local", pe_type=PEType.SINGLE_HEAD_RPE,
        local_layout="channels_last", local_window_size=(8, 8), output_stride=16,
    ),
    "global-lepe-fused-classes": dict(base_arch="tiny-moat-0", pe_type=PEType.LePE_FUSED, num_classes=10),
}


@pytest.mark.parametrize("name", list(REPRESENTATIVE))
def test_moat_exports_and_matches_eager(name):
    _export_and_compare(_moat(**REPRESENTATIVE[name]), torch.rand(1, 3, 128, 128))


@pytest.mark.parametrize("mode", ["global", "local"])
def test_reference_moat_exports(mode):
    kw = dict(local_window_size=(8, 8), output_stride=16) if mode == "local" else {}
    _export_and_compare(_moat("reference", attention_mode=mode, **kw), torch.rand(1, 3, 128, 128))


def test_deit_and_its_reference_export():
    config = DeiTConfig(name="deit-mini", embed_dim=64, depth=2, num_heads=2)
    x = torch.rand(1, 3, 64, 64)
    torch.manual_seed(0)
    for model in (build_deit(config, image_size=64), ReferenceDeiT(config, image_size=64)):
        randomize_(model)
        _export_and_compare(model, x)


def test_digits_models_export_with_trained_weights():
    from ane_vit.digits import load_model

    x = torch.rand(2, 3, 64, 64)
    for kind in ("ane", "reference"):
        ep = _export_and_compare(load_model(kind), x, atol=1e-4)
        assert tuple(ep.module()(x).shape) == (2, 10)


def test_strict_mode_exports():
    # strict=True traces with dynamo, which refuses some Python (warnings filters, bool(tensor))
    _export_and_compare(_moat(**REPRESENTATIVE["local-shrpe-seed-route"]), torch.rand(1, 3, 128, 128), strict=True)


def _norm_with(weight):
    ln = LayerNormANE(weight.numel())
    with torch.no_grad():
        ln.weight.copy_(weight)
        ln.bias.normal_(0.0, 0.5)
    return ln


def _exported_order(ln, x):
    """'folded' or 'textbook', read from the exported graph (a division means bias / weight)."""
    ep = torch.export.export(ln, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    with torch.no_grad():
        assert_parity(ln(x), ep.module()(x), atol=1e-5)
    return "folded" if any("div" in t for t in targets) else "textbook"


def test_fold_decided_outside_forward_and_refreshed():
    x = torch.randn(1, 8, 1, 5)
    ln = _norm_with(torch.linspace(0.5, 1.5, 8)).eval()
    assert ln.fold_shift and _exported_order(ln, x) == "folded"
    # a weight set to zero in place: eval() decides again before the export sees fake weights
    with torch.no_grad():
        ln.weight[2] = 0.0
    assert _exported_order(ln.eval(), x) == "textbook"
    # load_state_dict decides again too (no eval() between)
    ln.load_state_dict(_norm_with(torch.ones(8)).state_dict())
    assert _exported_order(ln, x) == "folded"
    # .half() can round a tiny weight to zero
    tiny = _norm_with(torch.full((8,), 1e-9))
    tiny.weight.data[0] = 1.0
    assert not tiny.fold_shift  # |bias / weight| far beyond float16's range
    # an eager call after an in-place change decides again, as before
    with torch.no_grad():
        ln.weight[5] = 0.0
    ln(x)
    assert not ln._fold_shift


def test_fold_keeps_float16_rule_in_exported_program():
    # |bias / weight| above 2**14 would overflow float16: the exported graph keeps the textbook order
    w = torch.ones(8)
    w[1] = 1e-6
    ln = _norm_with(w).eval()
    assert _exported_order(ln, torch.randn(1, 8, 1, 5)) == "textbook"


def _sweep():
    for arch in ARCHITECTURES:
        yield f"{arch}-global", dict(base_arch=arch)
        for layout in ("channels_first", "channels_last"):
            yield f"{arch}-local-{layout}", dict(base_arch=arch, attention_mode="local", local_layout=layout)
    for pe in PEType:
        for split in (True, False):
            for mode in ("global", "local"):
                yield f"tiny-moat-0-{pe.name}-split{split}-{mode}", dict(attention_mode=mode, pe_type=pe, split_head=split)


@pytest.mark.export_sweep
@pytest.mark.parametrize("name,kw", list(_sweep()), ids=[n for n, _ in _sweep()])
def test_every_configuration_exports(name, kw):
    if kw.get("base_arch", "tiny-moat-0") == "micro-moat":
        pytest.skip("micro-moat is exported at 64x64 by test_digits_models_export_with_trained_weights")
    _, model = build_model((1, 3, 256, 256), **kw)
    torch.manual_seed(0)
    randomize_(model)
    _export_and_compare(model, torch.rand(1, 3, 256, 256), atol=1e-4)


@pytest.mark.export_sweep
@pytest.mark.parametrize("mode", ["global", "local"])
def test_full_size_references_and_deit_tiny_export(mode):
    _, ref = build_reference_model((1, 3, 256, 256), "tiny-moat-0", mode)
    torch.manual_seed(0)
    randomize_(ref)
    _export_and_compare(ref, torch.rand(1, 3, 256, 256), atol=1e-4)
    if mode == "global":
        _export_and_compare(build_deit().eval(), torch.rand(1, 3, 224, 224), atol=1e-4)

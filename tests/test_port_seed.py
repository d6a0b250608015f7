"""ane_vit.port.load_seed_state_dict: the seed MOAT's key names and shapes load into ours.

The fixture ``data/seed_moat_state_dict_keys.json`` lists the state-dict names and shapes of
the seed's MOAT (apple/ml-vision-transformers-ane, commit recorded in the file) for three
builds; it was recorded from the seed, independently of ``ane_vit.port.seed``.
"""

import json
import re
from pathlib import Path

import pytest
import torch

from ane_vit.moat import build_model
from ane_vit.port import load_seed_state_dict, seed_key, seed_rpe_table_to_ane, to_seed_state_dict
from ane_vit.testing import assert_parity, randomize_

FIXTURE = json.loads((Path(__file__).parent / "data" / "seed_moat_state_dict_keys.json").read_text())
MODELS = FIXTURE["models"]


def _ours(build, seed=None, **overrides):
    kwargs = dict(build, shape=tuple(build["shape"]), **overrides)
    _, model = build_model(**kwargs)
    if seed is not None:
        randomize_(model, seed=seed)
    return model.eval()


def _random_seed_dict(names_shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in names_shapes.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g) + 0.5  # a variance is positive
        else:
            out[name] = torch.randn(shape, generator=g) * 0.1
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_our_model_has_exactly_the_seeds_keys_and_shapes(name):
    entry = MODELS[name]
    model = _ours(entry["build"])
    assert to_seed_state_dict(model).keys() == entry["state_dict"].keys()
    assert {k: list(v.shape) for k, v in to_seed_state_dict(model).items()} == entry["state_dict"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_seed_state_dict_loads_in_place_and_round_trips(name):
    entry = MODELS[name]
    seed_dict = _random_seed_dict(entry["state_dict"])
    model = _ours(entry["build"], seed=1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = [t.clone() for t in model(x)]
    assert load_seed_state_dict(model, seed_dict) is model
    for key, value in model.state_dict().items():
        theirs = seed_key(key)
        expected = seed_dict[theirs]
        if key.endswith("relative_position_bias_table"):
            expected = seed_rpe_table_to_ane(expected)
        assert torch.equal(value, expected.to(value.dtype)), key
    with torch.no_grad():
        after = model(x)
    assert all(not torch.allclose(a, b) for a, b in zip(after, before))  # the weights changed the outputs
    # ours -> seed names -> a fresh model: identical outputs
    fresh = load_seed_state_dict(_ours(entry["build"], seed=2), to_seed_state_dict(model))
    with torch.no_grad():
        assert_parity(list(after), list(fresh(x)), atol=0.0)
    # split_head changes the computation, not the weights
    other = load_seed_state_dict(_ours(entry["build"], split_head=False), to_seed_state_dict(model))
    with torch.no_grad():
        assert_parity(list(after), list(other(x)), min_psnr=100.0)


def test_rpe_table_orientation():
    entry = MODELS["tiny-moat-0/global/SINGLE_HEAD_RPE/align=True/64x64"]
    seed_dict = _random_seed_dict(entry["state_dict"])
    model = load_seed_state_dict(_ours(entry["build"]), seed_dict)
    key = "_blocks.2.0._window_attention.relative_position_bias_table"
    table = seed_dict[key]  # (2wh-1, 2ww-1, 1): the seed adds table[pos(k) - pos(q)]
    ours = model.stages[2][0].attention.relative_position_bias_table  # ours adds table[pos(q) - pos(k)]
    wh, ww = model.stages[2][0].attention.window_size
    dy, dx = 1, 2  # the offset pos(q) - pos(k) = (1, 2) is the seed's offset (-1, -2)
    assert ours[(dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1), 0] == table[-dy + wh - 1, -dx + ww - 1, 0]


def test_errors_name_the_keys_and_shapes():
    entry = MODELS["tiny-moat-0/global/LePE_ADD/align=True/64x64"]
    model = _ours(entry["build"], seed=3)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    good = _random_seed_dict(entry["state_dict"])

    bad = dict(good, **{"_blocks.2.0._window_attention.abs_pe": torch.zeros(1, 64, 128)})
    with pytest.raises(ValueError, match=r"1 key\(s\) of the wrong shape: _blocks\.2\.0\._window_attention\.abs_pe: expected \(1, 16, 128\), got \(1, 64, 128\)"):
        load_seed_state_dict(model, bad)
    with pytest.raises(ValueError, match=r"1 unexpected key\(s\) that the model has no place for: _blocks\.9\.0\.extra\.weight"):
        load_seed_state_dict(model, dict(good, **{"_blocks.9.0.extra.weight": torch.zeros(1)}))
    missing = {k: v for k, v in good.items() if k != "_stem.0.bias"}
    with pytest.raises(ValueError, match=r"1 missing key\(s\) that the model needs: _stem\.0\.bias"):
        load_seed_state_dict(model, missing)
    # a seed dict of another PE type: the LePE keys are unexpected, the RPE tables missing
    rpe = _random_seed_dict(MODELS["tiny-moat-0/global/SINGLE_HEAD_RPE/align=True/64x64"]["state_dict"])
    with pytest.raises(ValueError, match=r"missing key\(s\) that the model needs: .*abs_pe"):
        load_seed_state_dict(model, rpe)
    assert all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())  # nothing was copied
    with pytest.raises(ValueError, match="classifier head"):
        load_seed_state_dict(_ours(entry["build"], num_classes=10), good)
    with pytest.raises(TypeError, match="must be an ane_vit.moat.MOAT, got Linear"):
        load_seed_state_dict(torch.nn.Linear(2, 2), good)
    with pytest.raises(TypeError, match="mapping of names to tensors, got list"):
        load_seed_state_dict(model, list(good.items()))


def test_seed_key_examples():
    assert seed_key("stem.2.running_mean") == "_stem.2.running_mean"
    assert seed_key("stages.0.1.se.reduce.weight") == "_blocks.0.1._se_reduce.weight"
    assert seed_key("stages.2.0.mbconv.expand_norm.bias") == "_blocks.2.0._mbconv._bn0.bias"
    assert seed_key("stages.3.1.attention.lepe.weight") == "_blocks.3.1._window_attention.LePE_for_Value.weight"
    assert seed_key("head.fc.weight") is None


def _planted(value_of, key_of="last"):
    """A good seed dict for tiny-moat-0 (LePE_ADD, 64x64) with one value replaced."""
    entry = MODELS["tiny-moat-0/global/LePE_ADD/align=True/64x64"]
    good = _random_seed_dict(entry["state_dict"])
    keys = [k for k, v in good.items() if v.is_floating_point()]
    key = keys[-1] if key_of == "last" else keys[0]
    return entry, dict(good, **{key: value_of(good[key])}), key


@pytest.mark.parametrize("kind, value_of, message", [
    ("meta", lambda v: torch.empty(v.shape, device="meta"), r"a meta tensor \(a shape without data\)"),
    ("nan", lambda v: v.clone().index_fill_(0, torch.tensor([0]), float("nan")), r"\d+ NaN value\(s\)"),
    ("inf", lambda v: v.clone().index_fill_(0, torch.tensor([0]), float("-inf")), r"\d+ inf value\(s\)"),
    ("int", lambda v: v.round().to(torch.int64), r"dtype torch\.int64, expected a floating-point tensor \(the model holds torch\.float32\)"),
    ("bool", lambda v: v > 0, r"dtype torch\.bool, expected a floating-point tensor"),
    ("complex", lambda v: v.to(torch.complex64), r"dtype torch\.complex64, expected a floating-point tensor"),
    ("sparse", lambda v: v.to_sparse(), r"a sparse_coo tensor, expected a dense one"),
])
def test_a_value_that_cannot_be_loaded_is_refused_before_anything_is_copied(kind, value_of, message):
    # The seed loader used to raise only at the bad key's copy_, 416 of 474 tensors in
    # (a meta tensor), or to load NaN, inf, int, bool and complex values without a word.
    entry, seed_dict, key = _planted(value_of)
    model = _ours(entry["build"], seed=3)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"nothing was copied: 1 value\(s\) that cannot be loaded: " + re.escape(key) + ": " + message):
        load_seed_state_dict(model, seed_dict)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, snapshot[k])]
    assert changed == []


def test_integer_buffers_must_stay_integers_and_other_float_precisions_load():
    entry = MODELS["tiny-moat-0/global/LePE_ADD/align=True/64x64"]
    good = _random_seed_dict(entry["state_dict"])
    counter = next(k for k in good if k.endswith("num_batches_tracked"))
    model = _ours(entry["build"], seed=3)
    with pytest.raises(ValueError, match=re.escape(counter) + r": dtype torch\.float32, expected an integer tensor \(the model holds torch\.int64\)"):
        load_seed_state_dict(model, dict(good, **{counter: torch.tensor(7.0)}))
    wide = {k: v.double() if v.is_floating_point() else v for k, v in good.items()}  # float64 and bfloat16 are converted
    wide["_stem.0.weight"] = good["_stem.0.weight"].bfloat16()
    load_seed_state_dict(model, wide)
    assert model.stem[0].weight.dtype == torch.float32
    assert torch.equal(model.stem[0].weight, good["_stem.0.weight"].bfloat16().float())
    assert torch.equal(model.stages[0][0].expand.weight, good["_blocks.0.0._expand_conv.weight"])


def test_ctrl_c_during_the_copy_is_held_back_until_every_tensor_is_copied(monkeypatch):
    import os
    import signal

    entry = MODELS["tiny-moat-0/global/LePE_ADD/align=True/64x64"]
    good = _random_seed_dict(entry["state_dict"])
    model = _ours(entry["build"], seed=3)
    calls = []
    original = torch.Tensor.copy_

    def copy_and_interrupt(self, src, *args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, ten tensors in
        return original(self, src, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "copy_", copy_and_interrupt)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # an interactive run (xdist workers ignore SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            load_seed_state_dict(model, good)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, outer)
    monkeypatch.undo()
    assert len(calls) == len(good)  # the copy went on to the end, then the interrupt was raised
    for key, value in model.state_dict().items():
        expected = good[seed_key(key)]
        if key.endswith("relative_position_bias_table"):
            expected = seed_rpe_table_to_ane(expected)
        assert torch.equal(value, expected.to(value.dtype)), key

"""The routes of local attention (``ane_vit.bench.routes``): each computes the reference's
function, the rank-4 candidate stays at rank 4, and the committed comparison
(``results/local_routes.json``) backs the package's default. No conversion here (the file is
made by ``python -m ane_vit.bench --local-routes``); each test takes about a second."""

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from ane_vit import bench
from ane_vit.moat import MOATBlock, moat_config
from ane_vit.notebook import results_dir
from ane_vit.testing import randomize_


class _Ranks(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.ranks = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.ranks.append(t.dim())
        return out


@pytest.mark.parametrize("window", [(4, 8), (8, 16)])  # several windows, and one window spanning the map
def test_every_route_computes_the_same_block(window):
    torch.manual_seed(0)
    block = randomize_(MOATBlock(64, 64, window, attention_mode="local", pe_type="SINGLE_HEAD_RPE"), seed=1).eval()
    x = torch.randn(2, 64, 8, 16)  # (B, C, H, W)
    with torch.no_grad():
        expected = block(x)  # the default route
        outs = {route: bench.route_model(block, route)(x) for route in ("channels_first", "batch_rank4", "channels_last")}
    for route, out in outs.items():
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5, msg=route)
    assert type(block) is MOATBlock and block.local_layout == "channels_last"  # routed back to the default


def test_the_rank4_route_stays_at_rank_4_and_batches_the_windows():
    block = bench.route_model(MOATBlock(32, 32, (4, 4), attention_mode="local", pe_type="LePE_ADD").eval(), "batch_rank4")
    assert isinstance(block, bench.BatchWindowsRank4Block)
    mode = _Ranks()
    with torch.no_grad(), mode:
        block(torch.randn(1, 32, 8, 8))
    assert len(mode.ranks) > 50 and max(mode.ranks) == 4
    with torch.no_grad():  # forward_bc1s is called directly, so check the windows at its input
        calls = []
        original = block.attention.forward_bc1s
        block.attention.forward_bc1s = lambda x, *a: calls.append(tuple(x.shape)) or original(x, *a)
        block(torch.randn(1, 32, 8, 8))
    assert calls == [(4, 32, 1, 16)]  # (B*nW, C, 1, N): 4 windows of 4x4 on the batch axis


def test_route_errors_name_what_is_allowed():
    block = MOATBlock(32, 32, (4, 4), attention_mode="local")
    with pytest.raises(ValueError, match=r"route must be one of \('channels_last', 'channels_first', 'batch_rank4'\), got 'nhwc'"):
        bench.route_model(block, "nhwc")
    with pytest.raises(ValueError, match=r"routes must be among .* got \['sam3'\]"):
        bench.compare_local_routes(routes=("reference", "sam3"))


def _row(arch, route, width_upper, width_lower):
    facts = {k: 1 for k in bench.routes.ROUTE_FACTS}
    facts.update(layout_bytes_moving_width_padded=width_upper, layout_bytes_moving_width_padded_lower=width_lower,
                 activation_bytes_padded=70.6e6, activation_bytes_padded_lower=53.9e6, ops=446, layout_ops=91,
                 layout_ops_moving_width=50, max_rank=4)
    return {"arch": arch, "route": route, "facts": facts, "pytorch_vs_reference_psnr_db": 140.0}


def test_table_puts_each_fact_in_its_column():
    results = {"provenance": {}, "results": [_row("tiny-moat-0", "channels_first", 6.42e6, 3.18e6),
                                             _row("tiny-moat-1", "channels_first", 8.03e6, 3.97e6)]}
    lines = bench.local_routes_table(results, "tiny-moat-0").splitlines()
    assert lines[0] == "| route | ops | layout ops (moving width) | width-moving layout MB | padded activation MB | max rank |"
    assert lines[2] == "| channels_first | 446 | 91 (50) | 3.18-6.42 | 53.9-70.6 | 4 |"
    assert len(bench.local_routes_table(results).splitlines()) == 4  # both models, with a model column
    with pytest.raises(ValueError, match=r"no rows for arch 'moat-9'; the file has \['tiny-moat-0', 'tiny-moat-1'\]"):
        bench.local_routes_table(results, "moat-9")


def test_the_committed_comparison_backs_the_default():
    data = bench.load_results(results_dir() / "local_routes.json")
    prov = data["provenance"]
    assert prov["settings"]["timing"] is False and prov["command"].startswith("python -m ane_vit.bench --local-routes")
    assert set(prov["versions"]) >= {"torch", "coremltools", "numpy", "ane_vit"} and "randomize_" in prov["weights"]
    rows = {(r["arch"], r["route"]): r for r in data["results"]}
    assert set(rows) == {(a, r) for a in ("tiny-moat-0", "tiny-moat-1") for r in bench.LOCAL_ROUTES}
    default = moat_config((1, 3, 256, 256), attention_mode="local").local_layout
    for arch in ("tiny-moat-0", "tiny-moat-1"):
        for route in bench.LOCAL_ROUTES:
            row = rows[arch, route]
            assert set(row["facts"]) == set(bench.routes.ROUTE_FACTS)
            f = row["facts"]
            assert f["layout_bytes_moving_width_padded_lower"] <= f["layout_bytes_moving_width_padded"]
            assert f["activation_bytes_dense"] <= f["activation_bytes_padded_lower"] <= f["activation_bytes_padded"]
            psnr = float(row["pytorch_vs_reference_psnr_db"])
            assert math.isinf(psnr) if route == "reference" else psnr > 100  # one function, ported weights
        width = {r: rows[arch, r]["facts"]["layout_bytes_moving_width_padded"] for r in bench.LOCAL_ROUTES[1:]}
        assert min(width, key=width.get) == default  # the package's default is the recorded winner
        assert rows[arch, "batch_rank4"]["facts"]["max_rank"] == 4

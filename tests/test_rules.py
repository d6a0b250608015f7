"""``ane_vit.analysis.check_rules``: every rule on a small module that breaks it and on one
that keeps it, the numbers of a finding against hand-computed bytes, module paths, and
the errors on bad input. Each module is exported once (torch.export of a few ops)."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ane_vit.analysis import RULES, check_rules
from ane_vit.analysis.graph_checks import _conv_stride_problem
from ane_vit.layout import padded_nbytes

C, S = 64, 64  # (1, C, 1, S) float16: a last axis of 128 bytes, the layout that keeps every rule
X = (1, C, 1, S)


class Fn(nn.Module):
    """A module from a function of (self, x); the tests' tiny models."""

    def __init__(self, fn, **children):
        super().__init__()
        self.fn = fn
        for name, child in children.items():
            setattr(self, name, child)

    def forward(self, x):
        return self.fn(self, x)


def _conv(k=1, stride=1, dilation=1, cin=C, cout=C, padding=0):
    return nn.Conv2d(cin, cout, k, stride=stride, dilation=dilation, padding=padding)


def _one_head(q, kt, v):
    """Attention as Apple writes it for the ANE: q, v (1, C, 1, S), keys kt (1, S, 1, C);
    the softmax over the keys on the channel axis, no transpose (here C == S, so x serves as kt)."""
    w = torch.einsum("bchq,bkhc->bkhq", q, kt).softmax(dim=1)  # (1, S_k, 1, S_q)
    return torch.einsum("bkhq,bchk->bchq", w, v)  # (1, C, 1, S_q)


class BadNorm(nn.Module):
    """LayerNorm over the last axis, written out (mean, centre, variance, rsqrt)."""

    def forward(self, x):
        c = x - x.mean(dim=-1, keepdim=True)
        return c * torch.rsqrt((c * c).mean(dim=-1, keepdim=True) + 1e-5)


# rule -> (module that breaks it, input shape, module that keeps it, input shape). Every
# "keep" module is clean: no finding of any rule.
CASES = {
    "rank_above_5": (
        Fn(lambda s, x: x.reshape(1, 2, 32, 1, 2, 32).relu().reshape(X)), X,
        Fn(lambda s, x: x.reshape(1, 2, 32, 1, 64).relu().reshape(X)), X),
    "float32_value": (
        Fn(lambda s, x: s.c(x).float().relu(), c=_conv()), X,
        Fn(lambda s, x: s.c(x).relu(), c=_conv()), X),
    "float_literal": (
        Fn(lambda s, x: s.c(x) * 0.5, c=_conv()), X,
        Fn(lambda s, x: s.c(x) * s.scale, c=_conv(), scale=nn.Parameter(torch.tensor(0.5))), X),
    "narrow_last_axis": (
        Fn(lambda s, x: s.c(x), c=_conv()), (1, C, 4, 20),
        Fn(lambda s, x: s.c(x), c=_conv()), X),
    "singleton_last_axis": (
        Fn(lambda s, x: x.mean(dim=-1, keepdim=True) * x), X,
        Fn(lambda s, x: x.mean(dim=1, keepdim=True) * x), X),
    "layout_moves_last_axis": (
        Fn(lambda s, x: x.permute(0, 3, 2, 1).relu()), X,
        Fn(lambda s, x: x.permute(0, 2, 1, 3).reshape(1, C, 1, S).relu()), X),
    "linear_not_conv": (
        Fn(lambda s, x: s.l(x), l=nn.Linear(S, S)), X,
        Fn(lambda s, x: s.c(x), c=_conv()), X),
    "decomposed_norm": (
        BadNorm(), X,
        Fn(lambda s, x: F.layer_norm(x, (S,))), X),
    "softmax_spatial_axis": (
        Fn(lambda s, x: x.softmax(dim=-1)), X,
        Fn(lambda s, x: x.softmax(dim=1)), X),
    "fused_attention": (
        Fn(lambda s, x: F.scaled_dot_product_attention(x.reshape(1, 2, 32, S), x.reshape(1, 2, 32, S), x.reshape(1, 2, 32, S)).reshape(X)), X,
        Fn(lambda s, x: _one_head(x, x, x)), X),
    "conv_stride": (
        Fn(lambda s, x: s.c(x), c=_conv(k=1, stride=5)), (1, C, 5, 320),
        Fn(lambda s, x: s.c(x), c=_conv(k=1, stride=4)), (1, C, 4, 256)),
    "pool_stride": (
        Fn(lambda s, x: F.max_pool2d(x, 3, stride=3)), (1, C, 3, 192),
        Fn(lambda s, x: F.max_pool2d(x, 3, stride=2, padding=1)), (1, C, 2, 128)),
    "large_kernel": (
        Fn(lambda s, x: s.c(x), c=_conv(k=9, padding=4)), (1, C, 2, S),
        Fn(lambda s, x: s.b(s.a(x)), a=_conv(k=5, padding=2), b=_conv(k=5, padding=2)), (1, C, 2, S)),
    "large_dilation": (
        Fn(lambda s, x: s.c(x), c=_conv(k=3, dilation=8, padding=8)), (1, C, 2, S),
        Fn(lambda s, x: s.b(s.a(x)), a=_conv(k=3, dilation=2, padding=2), b=_conv(k=3, dilation=3, padding=3)), (1, C, 2, S)),
    "infinite_mask_value": (
        Fn(lambda s, x: x.masked_fill(x > 0, float("-inf")).softmax(dim=1)), X,
        Fn(lambda s, x: x.masked_fill(x > 0, s.neg), neg=nn.Parameter(torch.tensor(-1e4))), X),
}
# dynamic_shape is exported with dynamic_shapes (test below), not from a module alone.


def _report(module, shape, **kw):
    torch.manual_seed(0)
    return check_rules(module, torch.rand(shape), **kw)


def test_every_rule_is_tested_both_ways():
    assert set(CASES) | {"dynamic_shape"} == set(RULES)


@pytest.mark.parametrize("rule", list(CASES))
def test_rule_fires_on_a_module_that_breaks_it(rule):
    module, shape, _, _ = CASES[rule]
    found = _report(module, shape).of(rule)
    assert found, f"{rule}: no finding on the module that breaks it"
    assert all(f.severity == RULES[rule].severity and f.message for f in found)


@pytest.mark.parametrize("rule", list(CASES))
def test_module_that_keeps_the_rule_is_clean(rule):
    _, _, module, shape = CASES[rule]
    report = _report(module, shape)
    assert report.findings == [], "\n".join(f"{f.rule}: {f.message}" for f in report.findings)


def test_narrow_last_axis_numbers_are_the_padded_and_dense_bytes():
    module, shape, _, _ = CASES["narrow_last_axis"]
    found = _report(module, shape).of("narrow_last_axis")
    assert [f.node for f in found] == ["x", "conv2d"]  # the input and the conv's output, both (1, 64, 4, 20)
    # hand-computed: 64*4 rows of 20 float16 (40 B) padded to one 64-byte line each
    assert [(f.bytes, f.dense_bytes) for f in found] == [(64 * 4 * 64, 64 * 4 * 20 * 2)] * 2
    assert found[0].bytes == padded_nbytes((1, C, 4, 20), 2)
    assert "last axis 20 x 2 B = 40 B < 64 B" in found[0].message


def test_singleton_last_axis_is_32x_in_float16_and_names_the_op():
    found = _report(*CASES["singleton_last_axis"][:2]).of("singleton_last_axis")
    assert [(f.op, f.bytes, f.dense_bytes) for f in found] == [("mean", C * 64, C * 2)]


def test_layout_rule_counts_moving_and_keeping_ops():
    report = _report(*CASES["layout_moves_last_axis"][:2])
    (f,) = report.of("layout_moves_last_axis")
    assert (f.op, f.bytes) == ("permute", S * 1 * 64 * 2)  # (1, 64, 1, 64) -> (1, 64, 1, 64) rows rewritten
    assert "permutation [0, 3, 2, 1]" in f.message
    keep = _report(*CASES["layout_moves_last_axis"][2:])
    assert (keep.facts["layout_ops"], keep.facts["layout_ops_moving_last_axis"]) == (2, 0)
    swaps = _report(Fn(lambda s, x: (x.transpose(-1, -2), x.transpose(1, 2), x.movedim(1, 2), x.movedim(3, 1))), X)
    moved = [f.message.split("(permutation ")[1].split(")")[0] for f in swaps.of("layout_moves_last_axis")]
    assert moved == ["[0, 1, 3, 2]", "[0, 3, 1, 2]"] and swaps.facts["layout_ops"] == 4  # two keep the last axis
    (cut,) = _report(Fn(lambda s, x: x.reshape(1, C, 2, S // 2).relu()), X).of("layout_moves_last_axis")
    assert cut.op == "reshape" and "(1, 64, 1, 64) -> (1, 64, 2, 32) (last axis 64 -> 32)" in cut.message


def test_float_literals_count_and_parameters_do_not():
    report = _report(Fn(lambda s, x: (s.c(x) * 0.5 + 1.0) / 3.0, c=_conv()), X)
    found = report.of("float_literal")
    assert [(f.op, f.count) for f in found] == [("mul", 1), ("add", 1), ("div", 1)]
    assert "0.5" in found[0].message
    # eps and momentum of a batch norm are op parameters, not operands: no finding
    bn = _report(Fn(lambda s, x: s.bn(x), bn=nn.BatchNorm2d(C)), X)
    assert bn.of("float_literal") == []
    # a literal on weights alone is folded into a constant at conversion: no finding
    folded = _report(Fn(lambda s, x: s.c(x) * (s.w * 0.5), c=_conv(), w=nn.Parameter(torch.ones(1))), X)
    assert folded.of("float_literal") == []


def test_float32_constant_read_by_a_float16_model():
    report = _report(Fn(lambda s, x: x * torch.tensor([2.0])), X)  # a float32 tensor made in forward
    messages = sorted(f.message.split(" ")[1] for f in report.of("float32_value"))
    assert messages == ["computes", "reads"], messages  # the float32 product, and the float32 constant it reads
    assert check_rules(Fn(lambda s, x: x.float() * 2), torch.rand(X), dtype="float32").of("float32_value") == []


def test_infinite_values_mask_and_float16_overflow():
    huge = Fn(lambda s, x: x.masked_fill(x > 0, -1e9).softmax(dim=1))
    (f,) = _report(huge, X).of("infinite_mask_value")
    assert "beyond float16" in f.message and f.op == "masked_fill"
    assert _report(huge, X, dtype="float32").of("infinite_mask_value") == []  # -1e9 is finite in float32
    table = Fn(lambda s, x: x + s.mask, mask=nn.Parameter(torch.tensor([0.0, float("-inf")]).repeat(S // 2)))
    (g,) = _report(table, X).of("infinite_mask_value")
    assert "holds inf" in g.message


def test_decomposed_norm_over_channels_is_a_fact_not_a_finding():
    from ane_vit import LayerNormANE

    report = _report(LayerNormANE(C), X)
    assert report.of("decomposed_norm") == []
    assert report.facts["norms_written_out_not_last_axes"] == 1
    (f,) = _report(BadNorm(), X).of("decomposed_norm")
    assert "F.layer_norm" in f.message and f.bytes == padded_nbytes(X, 2)


@pytest.mark.parametrize(
    "stride, problem",
    [((2, 2), None), ((4, 4), None), ((6, 6), None), ((9, 9), None), ((12, 12), None), ((2, 4), None), ((2, 9), None),
     ((5, 5), "prime factor(s) [5]"), ((11, 1), "prime factor(s) [11]"), ((7, 5), "prime factor(s) [5, 7]"),
     ((3, 4), "unequal large strides"), ((4, 8), "unequal large strides"), ((2, 6), "mixed strides"), ((2, 16), "mixed strides")],
)
def test_conv_stride_rule_as_apple_lists_it(stride, problem):
    got = _conv_stride_problem(stride)
    assert (got is None) if problem is None else (problem in got), got


def test_patchify_kernel_suggests_pixel_unshuffle():
    (f,) = _report(Fn(lambda s, x: s.c(x), c=_conv(k=16, stride=16, cin=3)), (1, 3, 32, 512)).of("large_kernel")
    assert "pixel_unshuffle" in f.message and "(16, 16)" in f.message


def test_dynamic_shape_from_dynamic_export():
    dim = torch.export.Dim("s", min=2, max=512)
    report = _report(Fn(lambda s, x: x.relu()), X, dynamic_shapes=({3: dim},))
    (f,) = report.of("dynamic_shape")
    assert f.node == "x" and "symbolic axes [3]" in f.message
    assert report.input_shapes == [[1, C, 1, S]]
    assert _report(Fn(lambda s, x: x.relu()), X).of("dynamic_shape") == []


def test_module_path_names_the_attention_called_through_forward_bc1s():
    from ane_vit.moat import MOATBlock

    block = nn.Sequential(_conv(cin=3, cout=32), MOATBlock(32, 32, (8, 8), pe_type="NONE"))
    report = _report(block, (1, 3, 8, 8))
    modules = {f.module for f in report.of("layout_moves_last_axis")}
    assert "1.attention" in modules and "1" in modules, modules  # the key transpose, and the block's reshapes
    assert {f.module_type for f in report.findings if f.module == "1.attention"} == {"WindowAttention"}


def test_window_attention_has_no_float_literal():
    from ane_vit import PEType, WindowAttention

    layer = WindowAttention(C, (1, S), 2, pe_type=PEType.NONE)
    report = check_rules(Fn(lambda s, x: s.a.forward_bc1s(x), a=layer), torch.rand(X))
    assert report.of("float_literal") == [] and report.of("float32_value") == []


def test_the_model_passed_in_is_not_changed():
    model = Fn(lambda s, x: s.c(x) * 0.5, c=_conv()).train()
    _report(model, X)
    assert model.training and model.c.weight.dtype == torch.float32


def test_exported_program_is_read_as_it_is():
    module, shape, _, _ = CASES["layout_moves_last_axis"]
    ep = torch.export.export(copy.deepcopy(module).half().eval(), (torch.rand(shape).half(),))
    report = check_rules(ep, name="mine")
    assert report.model == "mine" and [f.rule for f in report.findings] == ["layout_moves_last_axis"]
    assert report.input_shapes == [list(shape)]


def test_report_serialises_and_counts_every_rule():
    report = _report(Fn(lambda s, x: (s.c(x) * 0.5).softmax(dim=-1), c=_conv()), (1, C, 4, 20))
    data = json.loads(report.to_json())
    # narrow last axis: x, conv, mul, softmax; the literal 0.5; the softmax over the last axis
    assert data["summary"]["findings"] == len(report.findings) == 6
    assert list(report.by_rule()) == list(RULES)
    rows = 64 * 4  # (1, 64, 4, 20): 256 rows of 20 float16, each padded to 64 bytes
    assert data["summary"]["by_rule"]["float_literal"] == {"findings": 1, "count": 1, "bytes": rows * 64, "dense_bytes": rows * 40}
    assert data["summary"]["by_rule"]["softmax_spatial_axis"]["bytes"] == 2 * rows * 64  # input and output
    text = report.table()
    assert "[warning] softmax_spatial_axis" in text and "narrow_last_axis" in text
    with pytest.raises(KeyError, match="unknown rule 'nope'; the rules are"):
        report.of("nope")


def test_bad_input_errors():
    module = Fn(lambda s, x: x.relu())
    with pytest.raises(ValueError, match=r"dtype must be one of \['float16', 'float32'\], got 'bfloat16'"):
        check_rules(module, torch.rand(X), dtype="bfloat16")
    with pytest.raises(TypeError, match=r"example_inputs must be a tensor or a non-empty tuple of tensors .*, got list of \['int'\]"):
        check_rules(module, [1])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module or a torch.export.ExportedProgram, got function"):
        check_rules(lambda x: x, torch.rand(X))
    ep = torch.export.export(module, (torch.rand(X),))
    with pytest.raises(ValueError, match="example_inputs must be None when model is an ExportedProgram"):
        check_rules(ep, torch.rand(X))
    branchy = Fn(lambda s, x: x if x.sum() > 0 else -x)
    with pytest.raises(RuntimeError, match="torch.export failed on Fn"):
        check_rules(branchy, torch.rand(X))


def test_rule_catalogue_is_complete():
    for rule in RULES.values():
        assert rule.severity in ("error", "warning", "info") and rule.title and rule.apple and rule.bytes_meaning
    assert math.isclose(float(torch.tensor(-4e4, dtype=torch.float16)), -4e4, rel_tol=1e-3)  # Apple's mask value fits float16

"""``analyze``'s width-aware layout cost: which layout ops move the last (width) axis, and the
two bounds of the padded bytes.

Apple's Neural Engine rules (apple/coreai-models, ``neural_engine_rules.md``, commit 86b363d)
single out reshapes and transposes that touch the width (innermost) dimension, and say that
intermediates held in L2 cache may tolerate widths under 64 bytes: padding every op output
is an upper bound, padding only the program's outputs a lower one. The oracle here is a MIL
program built op by op, each op's verdict and bytes written out by hand.
"""

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

from ane_vit.analysis import analyze, main  # noqa: E402

# op name -> (moves the last axis?, dense bytes, padded bytes): float16, 2 B per value; a row
# is padded to 64 B = 32 values. x is (1, 8, 4, 16): 32 rows of 16 values = 32 B, 1,024 B dense.
ORACLE = {
    "keep_t": (False, 1024, 32 * 64),  # (1, 4, 8, 16): outer axes swapped, rows of 16 kept
    "move_t": (True, 1024, 128 * 64),  # (1, 8, 16, 4): 128 rows of 4 values, each in a 64 B line
    "merge_rows": (True, 1024, 8 * 128),  # (1, 8, 1, 64): rows of 16 merged into rows of 64 (128 B)
    "regroup": (False, 1024, 32 * 64),  # (1, 32, 16): outer axes merged, rows of 16 kept
    "cat_channels": (False, 2048, 16 * 128),  # (1, 16, 1, 64): concat on axis 1
    "cat_width": (True, 2048, 8 * 256),  # (1, 8, 1, 128): concat on the last axis
    "split_width": (True, 2048, 2 * 8 * 128),  # 2 x (1, 8, 1, 64): split of the last axis
    "reverse_width": (True, 1024, 32 * 64),  # (1, 32, 16): same length, each row rewritten
    "reverse_outer": (False, 1024, 32 * 64),  # (1, 32, 16): rows moved whole
    "gather_width": (True, 1024, 8 * 128),  # (1, 8, 1, 64): a permutation inside each row
    "to_square": (False, 1024, 32 * 64),  # (1, 2, 16, 16): outer axes regrouped, rows of 16 kept
    "square_t": (True, 1024, 32 * 64),  # (1, 2, 16, 16) swapped: same shape, every row rewritten
    "relu": (None, 1024, 128 * 64),  # not a layout op: (1, 8, 16, 4)
}
OUTPUTS = ("relu", "cat_channels")  # the program's outputs: padded in both bounds


@pytest.fixture(scope="module")
def width_program():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 8, 4, 16), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(x):
        a = mb.transpose(x=x, perm=[0, 2, 1, 3], name="keep_t")
        b = mb.transpose(x=x, perm=[0, 1, 3, 2], name="move_t")
        c = mb.reshape(x=x, shape=[1, 8, 1, 64], name="merge_rows")
        d = mb.reshape(x=a, shape=[1, 32, 16], name="regroup")
        e = mb.concat(values=[c, c], axis=1, name="cat_channels")
        f = mb.concat(values=[c, c], axis=3, name="cat_width")
        mb.split(x=f, num_splits=2, axis=3, name="split_width")
        mb.reverse(x=d, axes=[-1], name="reverse_width")
        mb.reverse(x=d, axes=[1], name="reverse_outer")
        mb.gather(x=c, indices=np.arange(63, -1, -1, dtype=np.int32), axis=-1, name="gather_width")
        square = mb.reshape(x=x, shape=[1, 2, 16, 16], name="to_square")
        mb.transpose(x=square, perm=[0, 1, 3, 2], name="square_t")  # the perm says so, not the shapes
        return mb.relu(x=b, name="relu"), e

    return prog


def test_each_layout_op_split_by_the_width_axis(width_program):
    report = analyze(width_program)
    ops = {op.name: op for op in report.ops}
    assert set(ops) == set(ORACLE)
    for name, (moves, dense, padded) in ORACLE.items():
        assert (ops[name].moves_width, ops[name].dense_bytes, ops[name].padded_bytes) == (moves, dense, padded), name
    assert report.to_dict()["ops"][0]["moves_width"] is ops[report.ops[0].name].moves_width


def test_width_totals_and_both_bounds_by_hand(width_program):
    s = analyze(width_program).summary()
    layout = {k: v for k, v in ORACLE.items() if v[0] is not None}
    moving = [v for v in layout.values() if v[0]]
    keeping = [v for v in layout.values() if not v[0]]
    assert (s["layout_ops"], s["layout_ops_moving_width"], s["layout_ops_keeping_width"]) == (12, 7, 5)
    assert s["layout_ops_width_unknown"] == 0
    assert s["layout_bytes_moving_width_dense"] == sum(v[1] for v in moving) == 9216
    assert s["layout_bytes_moving_width_padded"] == sum(v[2] for v in moving) == 18432
    assert s["layout_bytes_keeping_width_padded"] == sum(v[2] for v in keeping) == 10240
    # lower bound: only the program's outputs padded. cat_channels is one (rows of 128 B: no
    # padding either way); relu's rows of 4 values are padded 16x in both bounds.
    assert s["layout_bytes_keeping_width_padded_lower"] == 1024 + 2048 + 1024 + 1024 + 1024
    assert s["layout_bytes_padded_lower"] == sum(v[1] for v in layout.values()) == 15360
    upper = sum(v[2] for v in ORACLE.values())
    lower = sum(v[2] if k in OUTPUTS else v[1] for k, v in ORACLE.items())
    assert (s["activation_bytes_padded"], s["activation_bytes_padded_lower"]) == (upper, lower) == (36864, 23552)


def test_bounds_meet_when_every_row_fills_whole_lines():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3, 64), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.relu(x=mb.transpose(x=x, perm=[1, 0, 2]))  # rows of 64 values = 128 B: no padding

    s = analyze(prog).summary()
    assert s["activation_bytes_padded_lower"] == s["activation_bytes_padded"] == s["activation_bytes_dense"] == 2 * (2 * 3 * 64) * 2  # 2 ops, 2 B a value
    assert (s["layout_ops_keeping_width"], s["layout_ops_moving_width"]) == (1, 0)


def test_symbolic_last_axis_is_unknown_unless_it_is_the_same_symbol():
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol, types

    n = get_new_symbol()

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 4, n), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(x):
        kept = mb.transpose(x=x, perm=[1, 0, 2], name="kept")  # the transpose's perm decides
        same = mb.concat(values=[kept, kept], axis=0, name="same_symbol")  # (8, 2, n): rows of n kept
        flat = mb.reshape(x=same, shape=[16, -1], name="flat")  # (16, n): the converter infers n
        return mb.squeeze(x=mb.expand_dims(x=flat, axes=[-1], name="unit_last"), axes=[-1], name="back")

    ops = {op.name: op.moves_width for op in analyze(prog).ops}
    assert ops["kept"] is False and ops["same_symbol"] is False
    assert ops["unit_last"] is None and ops["back"] is None  # n against 1: unknown for a symbolic n
    assert analyze(prog).summary()["layout_ops_width_unknown"] == 2


def test_attention_keys_move_the_width_and_the_head_split_keeps_it():
    from ane_vit import WindowAttention
    from ane_vit.export import to_mlprogram

    torch.manual_seed(0)
    attn = WindowAttention(dim=32, window_size=(4, 4), num_heads=2, split_head=True, pe_type="SINGLE_HEAD_RPE")
    report = analyze(to_mlprogram(attn.eval(), torch.randn(2, 16, 32)))  # (B, N, C) tokens in and out
    verdicts = {}
    for op in report.layout_ops:
        verdicts.setdefault(op.op_type, set()).add(op.moves_width)
    # tokens (B, N, C) -> (B, C, N) and back, and the keys once for all heads: 3 transposes, all moving
    assert verdicts["transpose"] == {True} and report.histogram()["transpose"] == 3
    # q and v split per head along channels (kept); the transposed keys split along their last axis (moved)
    assert verdicts["split"] == {False, True}
    assert verdicts["concat"] == {False} and verdicts["expand_dims"] == {False} and verdicts["squeeze"] == {False}


def test_table_and_cli_name_both_bounds_and_the_width_split(width_program, tmp_path, capsys):
    text = analyze(width_program).table()
    assert "activations: 0.016 MB dense; padded to 64 B rows: 0.024-0.037 MB" in text
    assert "lower bound: only the program's outputs padded" in text and "upper bound: every\n  op output padded" in text
    assert "moving the last (width) axis: 7 ops, 0.009 MB dense, 0.009-0.018 MB" in text
    assert "keeping the last axis: 5 ops, 0.006 MB dense, 0.006-0.010 MB" in text
    assert "MiB" not in text and "KiB" not in text  # the book's units: MB = 10^6 B, kB = 10^3 B
    assert max(len(line) for line in text.splitlines() if "<http" not in line) <= 76  # the book's column; URLs do not break

    class Net(torch.nn.Module):
        def forward(self, x):
            return x.permute(0, 1, 3, 2) + 1  # (1, 8, 4, 16) -> (1, 8, 16, 4): moves the width

    from ane_vit.export import export_model

    path = export_model(Net(), torch.randn(1, 8, 4, 16), tmp_path / "net.mlpackage")
    assert main([str(path), "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "moving the last (width) axis: 1 ops" in out and "keeping the last axis: 0 ops" in out and "lower bound" in out


def test_op_comparison_plot_counts_each_program(width_program):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ane_vit.analysis.plots import plot_op_comparison

    report = analyze(width_program)
    ax = plot_op_comparison({"a": report, "b": report}, top=3, kinds={"a": "reference", "b": "ane"})
    common = report.histogram().most_common(3)
    widths = [p.get_width() for p in ax.patches]
    assert widths == [n for _, n in common] * 2  # program a's bars, then program b's
    assert [t.get_text() for t in ax.get_yticklabels()] == [t for t, _ in common]
    assert ax.get_title() == "0 of the 3 most common op types differ in count"
    assert ax.figure.get_size_inches()[0] == pytest.approx(6.9)
    plt.close("all")

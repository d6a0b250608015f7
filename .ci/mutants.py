"""A scripted mutation pass over the core modules of ane_vit (not run by CI).

Each mutant is one realistic bug, written as an exact-string replacement in one file: an
axis swapped in a permute, an eps changed, a reduction over the wrong axis, a dropped bias
or error check, ``<`` for ``<=``, a missing scale, a wrong dtype size... For every mutant
the script copies the repository to a temporary folder, applies the replacement there (the
working tree is never touched), runs the fast tests of that module with a timeout and
records whether they failed (killed) or passed (survived). A mutant whose original text is
no longer in the file (the code has moved on) is reported as ``n/a``, not counted.

Run from the repository root, with the environment of the tests:

    PYTHONPATH=. python .ci/mutants.py                # every mutant, then a summary
    PYTHONPATH=. python .ci/mutants.py --list         # the mutants, without running them
    PYTHONPATH=. python .ci/mutants.py L1 AN2         # some of them, by id
    PYTHONPATH=. python .ci/mutants.py --json out.json

First the unmutated copy must pass every test group used (else the run stops). A survivor
is either a missing test (write one and re-run) or an equivalent mutant (it cannot change
behaviour); say which in the report. Takes about 15-20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Tests per module: the module's own tests and its oracle tests (fast ones only).
_NOT_SLOW = ["-m", "not slow", "--deselect", "tests/test_moat.py::test_float16_forward_stays_within_60_db_of_float32"]
TESTS = {
    "partition": ["tests/test_partition.py", "tests/test_attention.py"],
    "attention": ["tests/test_attention.py", "tests/test_argument_boundaries.py"],
    "norm": ["tests/test_norm.py", "tests/test_norm_oracle.py"],
    "layers": ["tests/test_layers_oracle.py", "tests/test_moat.py", "tests/test_moat_reference.py"],
    "port": ["tests/test_attention.py", "tests/test_deit.py", "tests/test_moat_reference.py", "tests/test_argument_boundaries.py"],
    "export": ["tests/test_export.py", "tests/test_argument_boundaries.py"],
    "analysis": ["tests/test_analysis.py", "tests/test_analysis_oracle.py", "tests/test_argument_boundaries.py"],
    "interpret": ["tests/test_interpret.py", "tests/test_interpret_oracle.py"],
    "testing": ["tests/test_testing.py", "tests/test_norm.py"],
    "checks": ["tests/test_input_checks.py", "tests/test_partition.py"],
}

# (id, tests key, file, original text, mutated text, what the bug is)
MUTANTS = [
    # --- code of this session's issues (one-op LayerNorm, windows along axis 2, pre-norm fold,
    # the one size/flag rule, overflow-safe log-sum-exp)
    ("S1", "norm", "ane_vit/norm.py",
     "return (out + shift) * self.weight.reshape(affine_shape)", "return out * self.weight.reshape(affine_shape) + shift",
     "one-op LayerNorm order adds bias/weight instead of bias"),
    ("S2", "partition", "ane_vit/partition.py",
     "x = x.permute(0, 2, 1, 3)  # (B*C*H/wh, W/ww, wh, ww): window column before in-window row",
     "x = x  # (B*C*H/wh, W/ww, wh, ww): window column before in-window row",
     "window_partition_nchw forgets the permute (windows are strips of rows)"),
    ("S3", "partition", "ane_vit/partition.py",
     "if _size(W) == ww:  # one window per row of windows", "if _size(H) == wh:  # one window per row of windows",
     "window_partition_nchw takes the reshape-only shortcut when a window spans the height"),
    ("S4", "layers", "ane_vit/layers.py",
     "shift = bn.bias - bn.running_mean * scale  # (C_in,)", "shift = bn.bias + bn.running_mean * scale  # (C_in,)",
     "pre-norm fold with the mean's sign flipped"),
    ("S5", "layers", "ane_vit/layers.py",
     "if self.fold_pre_norm and self.expand is not None and not self.training:",
     "if self.fold_pre_norm and self.expand is not None:",
     "pre-norm fold also in training (batch statistics ignored)"),
    ("S6", "checks", "ane_vit/_checks.py",
     "return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))",
     "return isinstance(value, (int, np.integer))",
     "bools accepted as sizes (dim=True)"),
    ("S7", "interpret", "ane_vit/interpret/ops.py",
     "out = m + np.log(np.exp(x - m).sum(axis=axes, keepdims=True))",
     "out = np.log(np.exp(x).sum(axis=axes, keepdims=True))",
     "reduce_log_sum_exp without the max shift (overflows at 100)"),
    ("S8", "attention", "ane_vit/attention.py",
     "v_2d = v.permute(0, 2, 1, 3).reshape(b * n_windows, c, *self.window_size)  # (B*nW, C, wh, ww)",
     "v_2d = v.reshape(b * n_windows, c, *self.window_size)  # (B*nW, C, wh, ww)",
     "LePE on windows along axis 2 mixes windows and channels"),
    # --- partition.py
    ("P1", "partition", "ane_vit/partition.py",
     "x = x.reshape(B * (H // wh), wh, W // ww, ww, C)", "x = x.reshape(B * (H // wh), ww, W // ww, wh, C)",
     "partition reshape with wh and ww swapped"),
    ("P2", "partition", "ane_vit/partition.py",
     "x = x.permute(0, 2, 1, 3, 4)  # (B*H/wh, W/ww, wh, ww, C)", "x = x.permute(0, 1, 2, 3, 4)  # (B*H/wh, W/ww, wh, ww, C)",
     "partition permute dropped"),
    ("P3", "partition", "ane_vit/partition.py",
     "x = x.permute(0, 2, 1, 3, 4)  # (B*H/wh, wh, W/ww, ww, C)", "x = x.permute(0, 2, 1, 4, 3)  # (B*H/wh, wh, W/ww, ww, C)",
     "reverse permute swaps the in-window column and channel axes"),
    ("P4", "partition", "ane_vit/partition.py",
     "if height % wh or width % ww:", "if height % wh or width % wh:",
     "divisibility check uses wh for the width"),
    ("P5", "checks", "ane_vit/_checks.py",
     'bad = [v for v in values if v <= 0]', 'bad = [v for v in values if v < 0]',
     "window of size 0 accepted (< for <=)"),
    ("P6", "partition", "ane_vit/partition.py",
     "    if windows.shape[0] % n_windows:\n", "    if windows.shape[0] < n_windows - 1:\n",
     "window-count check weakened"),
    ("P7", "partition", "ane_vit/attention.py",
     "return row * (2 * ww - 1) + col", "return row * (2 * wh - 1) + col",
     "relative-position index uses the wrong row stride (non-square windows)"),
    # --- attention.py
    ("A1", "attention", "ane_vit/attention.py",
     "return bias.permute(2, 1, 0).unsqueeze(2)", "return bias.permute(2, 0, 1).unsqueeze(2)",
     "RPE bias transposed (queries and keys swapped)"),
    ("A2", "attention", "ane_vit/attention.py",
     "rel = coords[:, :, None] - coords[:, None, :]", "rel = coords[:, None, :] - coords[:, :, None]",
     "relative offset sign flipped (the seed's orientation)"),
    ("A3", "attention", "ane_vit/attention.py",
     "q = self.q_proj(x) * self.scale", "q = self.q_proj(x)",
     "query scale missing"),
    ("A4", "attention", "ane_vit/attention.py",
     "weights = self.attn_drop(scores.softmax(dim=1))", "weights = self.attn_drop(scores.softmax(dim=3))",
     "split-head softmax over queries instead of keys"),
    ("A5", "attention", "ane_vit/attention.py",
     "weights = self.attn_drop(scores.softmax(dim=2))", "weights = self.attn_drop(scores.softmax(dim=3))",
     "fused softmax over queries instead of keys"),
    ("A6", "attention", "ane_vit/attention.py",
     "q = q.reshape(b, h, d, n)", "q = q.reshape(b, d, h, n)",
     "fused path splits the heads the wrong way"),
    ("A7", "attention", "ane_vit/attention.py",
     "scores = scores + bias[i if self.rpe_num_heads > 1 else 0]", "scores = scores + bias[0]",
     "every head gets head 0's RPE bias"),
    ("A8", "attention", "ane_vit/attention.py",
     'out = out + self._lepe(v, hw)', 'out = out + self._lepe(k, hw)',
     "LePE applied to the keys instead of the values"),
    ("A9", "attention", "ane_vit/attention.py",
     "x = x + self.abs_pe.permute(0, 2, 1).unsqueeze(2)", "x = x + self.abs_pe.reshape(1, self.dim, 1, -1)",
     "absolute PE reshaped instead of transposed"),
    ("A10", "attention", "ane_vit/attention.py",
     "else self.head_dim**-0.5", "else self.dim**-0.5",
     "default scale from dim instead of head_dim"),
    ("A11", "attention", "ane_vit/attention.py",
     "if x.shape[1] != self.num_tokens or x.shape[2] != self.dim:", "if x.shape[1] != self.num_tokens:",
     "channel-count check dropped"),
    ("A12", "attention", "ane_vit/attention.py",
     'h, w = self.window_size if hw is None else hw', 'w, h = self.window_size if hw is None else hw',
     "LePE sees the window transposed (non-square windows)"),
    ("A13", "attention", "ane_vit/attention.py",
     '        if dim % num_heads:\n', '        if dim < num_heads:\n',
     "heads that do not divide dim accepted"),
    ("A14", "attention", "ane_vit/attention.py",
     "if member.name.lower() == name.lower():", "if member.name == name:",
     "pe_type names become case-sensitive"),
    # --- norm.py
    ("N1", "norm", "ane_vit/norm.py",
     "torch.rsqrt(var + self.eps)", "torch.rsqrt(var)",
     "LayerNormANE ignores eps"),
    ("N2", "norm", "ane_vit/norm.py",
     "self.eps = float(eps)", "self.eps = 1e-5",
     "LayerNormANE ignores its eps argument"),
    ("N3", "norm", "ane_vit/norm.py",
     "centred = x - x.mean(dim=1, keepdim=True)", "centred = x - x.mean(dim=-1, keepdim=True)",
     "LayerNormANE centres over the last axis"),
    ("N4", "norm", "ane_vit/norm.py",
     "var = (centred * centred).mean(dim=1, keepdim=True)", "var = centred.var(dim=1, keepdim=True)",
     "unbiased variance"),
    ("N5", "norm", "ane_vit/norm.py",
     " + self.bias.reshape(affine_shape)", "",
     "LayerNormANE drops its bias"),
    # --- layers.py
    ("L1", "layers", "ane_vit/layers.py",
     "s = x.mean(dim=(2, 3), keepdim=True)", "s = x.mean(dim=3, keepdim=True)",
     "squeeze-excitation averages over W only"),
    ("L2", "layers", "ane_vit/layers.py",
     "_BN_EPS = 1e-3", "_BN_EPS = 1e-5",
     "MBConv batch-norm eps 1e-5 instead of the seed's 1e-3"),
    ("L3", "layers", "ane_vit/layers.py",
     "nn.GELU(),\n            nn.BatchNorm2d(c0),", "nn.BatchNorm2d(c0),\n            nn.GELU(),",
     "stem: batch norm before GELU"),
    ("L4", "layers", "ane_vit/layers.py",
     "nn.AvgPool2d(kernel_size=2, stride=2)", "nn.MaxPool2d(kernel_size=2, stride=2)",
     "shortcut max-pools instead of averaging"),
    ("L5", "layers", "ane_vit/layers.py",
     "self.act = nn.GELU()\n        self.expand = nn.Conv2d(squeezed_channels", "self.act = nn.ReLU()\n        self.expand = nn.Conv2d(squeezed_channels",
     "squeeze-excitation uses ReLU"),
    ("L6", "layers", "ane_vit/layers.py",
     "padding=kernel_size // 2, groups=hidden", "padding=1, groups=hidden",
     "depthwise padding fixed at 1 (wrong for 5x5)"),
    ("L7", "layers", "ane_vit/layers.py",
     "y = self.act(self.depthwise_norm(self.depthwise(y)))", "y = self.depthwise_norm(self.depthwise(y))",
     "activation after the depthwise conv dropped"),
    ("L8", "layers", "ane_vit/layers.py",
     "SqueezeExcitation(hidden, max(1, int(in_channels * se_ratio)))", "SqueezeExcitation(hidden, max(1, int(hidden * se_ratio)))",
     "SE width from the hidden width instead of the input width"),
    ("L9", "layers", "ane_vit/layers.py",
     "self.pre_norm = nn.BatchNorm2d(in_channels)", "self.pre_norm = nn.BatchNorm2d(in_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)",
     "pre-norm takes the TensorFlow settings"),
    ("L10", "layers", "ane_vit/layers.py",
     "y = self.pre_norm(x)", "x = y = self.pre_norm(x)",
     "shortcut taken after the pre-norm"),
    ("L11", "layers", "ane_vit/layers.py",
     "_BN_MOMENTUM = 0.01", "_BN_MOMENTUM = 0.1",
     "batch-norm momentum 0.1 instead of TensorFlow's 0.99"),
    ("L12", "layers", "ane_vit/layers.py",
     "nn.Conv2d(c0, c1, kernel_size=3, stride=1, padding=1)", "nn.Conv2d(c0, c1, kernel_size=3, stride=1, padding=1, bias=False)",
     "stem's second conv loses its bias"),
    # --- testing.py
    ("T1", "testing", "ane_vit/testing.py",
     '    _check_finite(t, "test", name)\n', "",
     "assert_parity lets NaN/inf in the test output through"),
    ("T2", "testing", "ane_vit/testing.py",
     '    _check_finite(r, "reference", name)  # NaN would compare False with every threshold\n', "",
     "assert_parity lets NaN/inf in the reference through"),
    ("T3", "testing", "ane_vit/testing.py",
     "not report.max_abs <= atol", "not report.max_abs < atol",
     "atol made exclusive"),
    ("T4", "testing", "ane_vit/testing.py",
     "peak = float(np.max(np.abs(r)))", "peak = float(np.max(np.abs(t)))",
     "PSNR peak taken from the test output"),
    ("T5", "testing", "ane_vit/testing.py",
     "return 20.0 * math.log10(peak / math.sqrt(mse))", "return 10.0 * math.log10(peak / math.sqrt(mse))",
     "PSNR with 10 log10 of an amplitude ratio"),
    ("T6", "testing", "ane_vit/testing.py",
     "min(r.psnr_db for r in reports)", "max(r.psnr_db for r in reports)",
     "sequence report keeps the best PSNR, not the worst"),
    ("T8", "testing", "ane_vit/testing.py",
     "mod.weight.add_(1.0)  # scales around 1", "mod.weight.add_(0.0)  # scales around 1",
     "randomize_ leaves norm scales around 0"),
    ("T7", "testing", "ane_vit/testing.py",
     "ok = len(shape) == len(expected) and", "ok =",
     "check_shape ignores the rank"),
    # --- port/
    ("PO1", "port", "ane_vit/port/attention.py",
     "enumerate((ane.q_proj, ane.k_proj, ane.v_proj))", "enumerate((ane.k_proj, ane.q_proj, ane.v_proj))",
     "q and k swapped when splitting the fused qkv"),
    ("PO2", "port", "ane_vit/port/attention.py",
     "return table.flip(0, 1).reshape(-1, table.shape[2])", "return table.flip(0).reshape(-1, table.shape[2])",
     "seed RPE table flipped along one axis only"),
    ("PO3", "port", "ane_vit/port/deit.py",
     "ane.pos_embed.copy_(reference.pos_embed.permute(0, 2, 1).unsqueeze(2))", "ane.pos_embed.copy_(reference.pos_embed.reshape(ane.pos_embed.shape))",
     "DeiT position embedding reshaped instead of transposed"),
    ("PO4", "port", "ane_vit/port/moat.py",
     "        ane.head.norm.bias.copy_(reference.head.norm.bias)\n", "",
     "MOAT head norm bias not ported"),
    ("PO5", "port", "ane_vit/port/moat.py",
     '_IGNORED_FIELDS = {"split_head", "local_layout"}', '_IGNORED_FIELDS = {"split_head", "local_layout", "pe_type"}',
     "port accepts MOATs with different PE types"),
    ("PO6", "port", "ane_vit/port/attention.py",
     "if (bias is None) != (conv.bias is None):", "if bias is not None and conv.bias is None:",
     "linear without bias ported into a conv with a bias (stale bias kept)"),
    # --- export/
    ("E1", "export", "ane_vit/export/paths.py",
     "batch{b}_{h}x{w}_", "batch{b}_{w}x{h}_",
     "file name has width and height swapped"),
    ("E2", "export", "ane_vit/export/paths.py",
     "if path.exists() and not overwrite:", "if path.exists() and overwrite:",
     "existing file check inverted"),
    ("E3", "export", "ane_vit/export/paths.py",
     'return positive_ints(shape, "shape", 4, "(B, C, H, W)")', 'return tuple(shape)',
     "zero-sized shape accepted"),
    ("E4", "export", "ane_vit/export/convert.py",
     "inv_std = [1.0 / float(s) for s in image_std]", "inv_std = [float(s) for s in image_std]",
     "image input multiplied by std instead of divided"),
    ("E5", "export", "ane_vit/export/cli.py",
     "if min(s) <= 0:", "if min(s) < 0:",
     "CLI accepts a zero size"),
    ("E6", "export", "ane_vit/export/save.py",
     'else [f"stage_{i}" for i in range(n_out)]', 'else [f"stage_{i + 1}" for i in range(n_out)]',
     "stage outputs numbered from 1"),
    ("E7", "export", "ane_vit/export/metadata.py",
     '"ane_vit.input_shape": json.dumps(list(shape))', '"ane_vit.input_shape": json.dumps(list(shape[1:]))',
     "metadata input shape loses the batch"),
    ("E8", "export", "ane_vit/export/cli.py",
     'for s in shapes:\n            cfg = {"base_arch": args.arch, "attention_mode": mode, "pe_type": args.pe_type, "split_head": split_head}', 'for s in shapes:\n            cfg = {"base_arch": args.arch, "attention_mode": mode, "pe_type": args.pe_type, "split_head": True}',
     "CLI file name ignores --no-split-head"),
    ("E9", "export", "ane_vit/export/convert.py",
     "if any(s <= 0 for s in std):", "if any(s < 0 for s in std):",
     "a zero image std accepted"),
    # --- analysis/
    ("AN1", "analysis", "ane_vit/analysis/program.py",
     "k = xs[0] if len(xs) == 1 else (xs[-2] if tx else xs[-1])", "k = xs[0] if len(xs) == 1 else xs[-1]",
     "matmul FLOPs ignore transpose_x"),
    ("AN2", "analysis", "ane_vit/analysis/program.py",
     "padded = padded_nbytes(shape, max(1, int(elem))) if elem >= 1 else dense", "padded = padded_nbytes(shape) if elem >= 1 else dense",
     "padded bytes assume 2-byte elements"),
    ("AN3", "analysis", "ane_vit/analysis/program.py",
     "return 2 * math.prod(out) * math.prod(shapes[1][1:])", "return 2 * math.prod(out) * math.prod(shapes[1][2:])",
     "conv FLOPs forget C_in/groups"),
    ("AN4", "analysis", "ane_vit/analysis/program.py",
     "return 2 * math.prod(out) * shapes[1][-1]", "return 2 * math.prod(out) * shapes[1][0]",
     "linear FLOPs use D_out for D_in"),
    ("AN5", "analysis", "ane_vit/analysis/program.py",
     "if t.rank > ANE_MAX_RANK:", "if t.rank >= ANE_MAX_RANK:",
     "rank-5 tensors flagged (>= for >)"),
    ("AN6", "analysis", "ane_vit/analysis/program.py",
     '_DTYPE_BYTES = {"fp16": 2, "fp32": 4,', '_DTYPE_BYTES = {"fp16": 2, "fp32": 2,',
     "fp32 counted as 2 bytes"),
    ("AN7", "analysis", "ane_vit/analysis/program.py",
     '"padding_waste_fraction": (padded - dense) / padded if padded else 0.0', '"padding_waste_fraction": (padded - dense) / dense if dense else 0.0',
     "padding fraction of the dense size"),
    ("AN8", "analysis", "ane_vit/analysis/program.py",
     "any(v.op is None for v in _input_vars(mil_op))", "all(v.op is None for v in _input_vars(mil_op))",
     "input casts no longer exempt from float32_compute"),
    ("AN9", "analysis", "ane_vit/analysis/program.py",
     "and t.waste_bytes > MAX_PADDING_FRACTION * t.padded_bytes", "and t.waste_bytes > MAX_PADDING_FRACTION * t.dense_bytes",
     "misalignment share of the dense size"),
    ("AN10", "analysis", "ane_vit/analysis/program.py",
     "return int(digits) / 8 if digits else 0", "return int(digits) // 8 if digits else 0",
     "sub-byte dtypes (int4, uint4) counted as 0 bytes"),
    # --- interpret/
    ("I1", "interpret", "ane_vit/interpret/ops.py",
     "e = np.exp(x - x.max(axis=axis, keepdims=True))", "e = np.exp(x)",
     "softmax without the max subtraction"),
    ("I2", "interpret", "ane_vit/interpret/ops.py",
     "small, large = total // 2, total - total // 2", "large, small = total // 2, total - total // 2",
     "'same' padding puts the extra row before (same_lower's rule)"),
    ("I3", "interpret", "ane_vit/interpret/ops.py",
     'with np.errstate(over="ignore", invalid="ignore"):\n        centred = x - x.mean(axis=axes, keepdims=True)\n        var = np.mean(np.square(centred), axis=axes, keepdims=True)', 'with np.errstate(over="ignore", invalid="ignore"):\n        centred = x - x.mean(axis=axes, keepdims=True)\n        var = np.mean(np.square(x), axis=axes, keepdims=True)',
     "layer_norm variance not centred"),
    ("I4", "interpret", "ane_vit/interpret/ops.py",
     'if bool(a.get("transpose_y", False)):', 'if bool(a.get("transpose_x", False)):',
     "matmul reads transpose_x for y"),
    ("I5", "interpret", "ane_vit/interpret/ops.py",
     "        return total / count\n", "        return total / float(np.prod(kernel))\n",
     "avg_pool ignores exclude_padding_from_average"),
    ("I6", "interpret", "ane_vit/interpret/ops.py",
     "(x + 0.044715 * x**3)", "(x + 0.04715 * x**3)",
     "tanh-GELU coefficient mistyped"),
    ("I7", "interpret", "ane_vit/interpret/ops.py",
     "return 0.5 * (np.tanh(0.5 * x) + 1.0)", "return 0.5 * (np.tanh(x) + 1.0)",
     "sigmoid without the half inside tanh"),
    ("I8", "interpret", "ane_vit/interpret/__init__.py",
     "env[var.name] = value.astype(_nptype(var))", "env[var.name] = value",
     "inputs not cast to the program's input dtype"),
    ("I9", "interpret", "ane_vit/interpret/layout_ops.py",
     "stacked = np.stack(values, axis=(axis % values[0].ndim) + 1)", "stacked = np.stack(values, axis=axis % values[0].ndim)",
     "concat interleave stacks before the axis (blocks, not alternation)"),
    ("I10", "interpret", "ane_vit/interpret/ops.py",
     "mult = cout // cin\n", "mult = 1\n",
     "depthwise conv with a channel multiplier ignores it"),
    ("I11", "interpret", "ane_vit/interpret/ops.py",
     'y = (x - _channel(a["mean"], x)) / np.sqrt(_channel(a["variance"], x) + float(a.get("epsilon", 1e-5)))',
     'y = (x - _channel(a["mean"], x)) / np.sqrt(_channel(a["variance"], x) + 1e-5)',
     "batch_norm ignores the program's epsilon"),
    ("I12", "interpret", "ane_vit/interpret/ops.py",
     'y = _normalise(x, axes, float(a.get("epsilon", 1e-5)))\n    if a.get("gamma") is not None:\n        y = y * _channel(a["gamma"], x)', 'y = _normalise(x, axes, 1e-5)\n    if a.get("gamma") is not None:\n        y = y * _channel(a["gamma"], x)',
     "instance_norm ignores the program's epsilon"),
    ("I13", "interpret", "ane_vit/interpret/ops.py",
     'norm_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]\n    y = _normalise(x, axes, float(a.get("epsilon", 1e-5)))', 'norm_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]\n    y = _normalise(x, axes, 0.0)',
     "layer_norm drops epsilon"),
    ("I14", "interpret", "ane_vit/interpret/layout_ops.py",
     "return np.take(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)", "return np.take(x, idx, axis=axis)",
     "gather without wrapping negative indices (EQUIVALENT on valid input: np.take wraps indices in [-D, 0) itself)"),
    ("I15", "interpret", "ane_vit/interpret/ops.py",
     'fill = -np.inf if kind == "max" else 0.0', "fill = 0.0",
     "max_pool pads with zeros"),
    ("I16", "interpret", "ane_vit/interpret/__init__.py",
     "if shape is not None and value.shape != shape:", "if False:",
     "op result shape no longer checked against the program"),
]


def _copy_repo(src: Path, dst: Path) -> None:
    ignore = shutil.ignore_patterns(".git", "_build", ".venv", "__pycache__", "*.mlpackage", ".ipynb_checkpoints")
    shutil.copytree(src, dst, ignore=ignore)


def _run_tests(root: Path, files: list[str], timeout: float) -> tuple[str, float, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "pytest", *files, "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist", "--no-header",
           "-o", "addopts=", *_NOT_SLOW]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return ("passed" if proc.returncode == 0 else "failed"), time.perf_counter() - start, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="mutant ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test run (a timeout counts as killed)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)

    ids = [m[0] for m in MUTANTS]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate mutant ids")
    unknown = sorted(set(args.ids) - set(ids))
    if unknown:
        parser.error(f"unknown mutant ids {unknown}")
    chosen = [m for m in MUTANTS if not args.ids or m[0] in args.ids]
    if args.list:
        for mid, _key, path, _, _, what in chosen:
            print(f"{mid:<5}{path:<34}{what}")
        return 0

    repo = Path(__file__).resolve().parent.parent
    results = []
    with tempfile.TemporaryDirectory(prefix="ane-vit-mutants-") as tmp:
        root = Path(tmp) / "repo"
        _copy_repo(repo, root)
        for key in sorted({m[1] for m in chosen}):
            status, secs, tail = _run_tests(root, TESTS[key], args.timeout)
            print(f"baseline {key:<10} {status} in {secs:.0f} s  {tail}", flush=True)
            if status != "passed":
                print("the unmutated code must pass its tests first", file=sys.stderr)
                return 1
        for mid, key, rel, old, new, what in chosen:
            target = root / rel
            original = target.read_text(encoding="utf-8")
            count = original.count(old)
            if count != 1:
                status, secs, tail = "n/a", 0.0, f"original text found {count} times"
            else:
                target.write_text(original.replace(old, new), encoding="utf-8")
                try:
                    status, secs, tail = _run_tests(root, TESTS[key], args.timeout)
                finally:
                    target.write_text(original, encoding="utf-8")
            verdict = {"failed": "killed", "timeout": "killed (timeout)", "passed": "SURVIVED"}.get(status, status)
            results.append({"id": mid, "file": rel, "bug": what, "result": verdict, "seconds": round(secs, 1), "tests": TESTS[key]})
            print(f"{mid:<5}{verdict:<17}{secs:6.0f} s  {rel}: {what}", flush=True)

    counted = [r for r in results if r["result"] != "n/a"]
    killed = [r for r in counted if r["result"].startswith("killed")]
    survivors = [r["id"] for r in counted if r["result"] == "SURVIVED"]
    score = len(killed) / len(counted) if counted else float("nan")
    print(f"\nmutation score: {len(killed)}/{len(counted)} killed = {100 * score:.1f} %"
          + (f"; survived: {', '.join(survivors)}" if survivors else "")
          + (f"; n/a: {len(results) - len(counted)}" if len(results) != len(counted) else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"score": score, "results": results}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

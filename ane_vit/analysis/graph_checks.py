"""The graph side of ``ane_vit.analysis.check_rules``: read a ``torch.export`` graph and
find where it breaks Apple's Neural Engine rules (``ane_vit.analysis.rules.RULES``).

``run_checks(ep, dtype, module_paths)`` returns the findings and the facts the rules read.
One function per group of rules; each looks only at values computed from the model's
inputs (weights-only subgraphs are folded into constants by the converter).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..layout import ANE_ALIGN_BYTES, ANE_MAX_RANK, moves_last_axis, padded_nbytes
from .rules import FLOAT16_MAX, LARGE_DILATION, LARGE_KERNEL, RULES, RuleFinding

__all__ = ["run_checks"]


# --------------------------------------------------------------------------- the graph


class _Graph:
    """The exported graph with what the rules need: runtime nodes, constants, module paths."""

    def __init__(self, ep: torch.export.ExportedProgram, dtype: torch.dtype, modules: dict[str, str] | None = None):
        self.ep, self.dtype = ep, dtype
        self.modules = modules or {}  # dotted path -> class name, of the model that was exported
        self.nodes = list(ep.graph.nodes)
        sig = ep.graph_signature
        self.user_inputs = set(sig.user_inputs)
        self.constants: dict[str, torch.Tensor] = {}
        for name, target in [*sig.inputs_to_parameters.items(), *sig.inputs_to_buffers.items(),
                             *sig.inputs_to_lifted_tensor_constants.items()]:
            value = ep.state_dict.get(target, ep.constants.get(target))
            if isinstance(value, torch.Tensor):
                self.constants[name] = value
        # runtime: computed from a user input (anything else the converter folds into a constant)
        self.runtime: set[str] = set()
        for n in self.nodes:
            if n.op == "placeholder" and n.name in self.user_inputs:
                self.runtime.add(n.name)
            elif n.op == "call_function" and any(a.name in self.runtime for a in n.all_input_nodes):
                self.runtime.add(n.name)

    def calls(self, runtime_only: bool = True) -> Iterator[torch.fx.Node]:
        for n in self.nodes:
            if n.op == "call_function" and (not runtime_only or n.name in self.runtime):
                yield n

    def module_of(self, node: torch.fx.Node) -> tuple[str, str]:
        """(dotted module path, class name) of the innermost module that owns the node.

        ``nn_module_stack`` records modules entered through ``__call__``; a method called
        directly (``self.attention.forward_bc1s(x)``) leaves its ops with the caller. The
        call's source line, the last frame of the node's ``stack_trace``, names the
        submodule (``attention``): the path is refined to it when the model has it.
        """
        stack = node.meta.get("nn_module_stack") or {}
        path, cls = list(stack.values())[-1] if stack else ("", "")
        path = str(path).replace("L['self']", "").replace("L__self__", "")
        path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path).strip(".")
        name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
        frames = (node.meta.get("stack_trace") or "").strip().splitlines()
        if frames and self.modules:
            called = set(re.findall(r"self\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.(?!forward\b)[A-Za-z_]\w*\(", frames[-1]))
            inner = [f"{path}.{c}".strip(".") for c in called if f"{path}.{c}".strip(".") in self.modules]
            if len(inner) == 1:
                return inner[0], self.modules[inner[0]]
        return path, name


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return packet.__name__.rstrip("_")
    return getattr(target, "__name__", str(target))


def _tensors(node: torch.fx.Node) -> list:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return [val]
    if isinstance(val, (list, tuple)):
        return [v for v in val if isinstance(v, torch.Tensor)]
    return []


def _static_shape(t: torch.Tensor) -> tuple | None:
    """The shape as ints, or None if an axis is a free symbol (a dynamic shape)."""
    if any(_is_free(s) for s in t.shape):
        return None
    return tuple(int(s) for s in t.shape)


def _nbytes(tensors: Sequence[torch.Tensor]) -> tuple[int, int]:
    """(padded, dense) bytes of tensors; 0 for symbolic shapes."""
    padded = dense = 0
    for t in tensors:
        shape = _static_shape(t)
        if shape is None:
            continue
        size = t.dtype.itemsize
        padded += padded_nbytes(shape, size)
        dense += math.prod(shape) * size
    return padded, dense


def _fmt(shape: Sequence) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _arg(node: torch.fx.Node, index: int, name: str, default: Any = None) -> Any:
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[index] if len(node.args) > index else default


def _pair(value: Any, n: int = 2) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        vals = [int(v) for v in value]
        return tuple(vals * n) if len(vals) == 1 else tuple(vals)
    return (int(value),) * n


def _primes(n: int) -> set[int]:
    out, p = set(), 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            out.add(p)
            n //= p
        p += 1
    if n > 1:
        out.add(n)
    return out


class _Findings:
    def __init__(self, graph: _Graph):
        self.graph = graph
        self.items: list[RuleFinding] = []

    def add(self, rule: str, node: torch.fx.Node, message: str, count: int = 1,
            tensors: Sequence[torch.Tensor] | None = None) -> None:
        padded, dense = _nbytes(_tensors(node) if tensors is None else tensors)
        module, module_type = self.graph.module_of(node)
        self.items.append(RuleFinding(rule, RULES[rule].severity, module, module_type, node.name,
                                      _op_name(node), message, count, padded, dense))


# --------------------------------------------------------------------------- the rules


def _rank_and_width(g: _Graph, out: _Findings, facts: dict) -> None:
    """rank_above_5, narrow_last_axis, singleton_last_axis on every runtime tensor."""
    line = ANE_ALIGN_BYTES
    seen = 0
    for n in [*(p for p in g.nodes if p.op == "placeholder" and p.name in g.user_inputs), *g.calls()]:
        if isinstance(n.meta.get("val"), (list, tuple)):
            continue  # a split's outputs: each is checked at its getitem
        for t in _tensors(n):
            shape = _static_shape(t)
            if shape is None:
                continue
            seen += 1
            if len(shape) > ANE_MAX_RANK:
                out.add("rank_above_5", n, f"{_fmt(shape)} has rank {len(shape)}: fold singleton or batch-like axes "
                        f"together (reshape) to stay at rank {ANE_MAX_RANK} or below", tensors=[t])
            last = shape[-1] if shape else 1
            size = t.dtype.itemsize
            if last == 1:
                out.add("singleton_last_axis", n, f"{_fmt(shape)} {str(t.dtype).replace('torch.', '')}: a singleton last axis is padded "
                        f"to {line} B ({line // size}x the data); put a longer axis last", tensors=[t])
            elif last * size < line:
                out.add("narrow_last_axis", n, f"{_fmt(shape)}: last axis {last} x {size} B = {last * size} B < {line} B; "
                        f"lay out a longer axis (>= {line // size} elements) last", tensors=[t])
    facts["runtime_tensors"] = seen


_TRANSPOSES = {"permute", "transpose", "t", "movedim", "swapaxes", "swapdims", "numpy_T", "permute_copy", "transpose_copy"}
_LAYOUT = _TRANSPOSES | {
    "view", "reshape", "_unsafe_view", "view_copy", "unsqueeze", "squeeze", "flatten", "unflatten", "expand",
    "expand_copy", "cat", "concat", "stack", "split", "split_with_sizes", "chunk", "unbind", "slice", "select",
    "narrow", "constant_pad_nd", "pad", "pixel_shuffle", "pixel_unshuffle", "repeat", "tile", "roll", "flip",
    "unfold", "index_select", "unsqueeze_copy", "squeeze_copy",
}


def _perm(node: torch.fx.Node, rank: int) -> list[int] | None:
    name = _op_name(node)
    if name in ("permute", "permute_copy"):
        return [int(p) % rank for p in node.args[1]]
    if name in ("transpose", "swapaxes", "swapdims", "transpose_copy"):
        a, b = int(node.args[1]) % rank, int(node.args[2]) % rank
        perm = list(range(rank))
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    if name in ("t", "numpy_T"):
        return list(range(rank))[::-1]
    if name == "movedim":
        src, dst = _pair(node.args[1], 1), _pair(node.args[2], 1)
        order = [d for d in range(rank) if d not in [s % rank for s in src]]
        for s, d in sorted(zip(src, dst), key=lambda sd: sd[1] % rank):
            order.insert(d % rank, s % rank)
        return order
    return None


def _layout(g: _Graph, out: _Findings, facts: dict) -> None:
    """layout_moves_last_axis: layout ops whose output has another last axis than their input."""
    total = moving = 0
    moving_bytes = 0
    for n in g.calls():
        name = _op_name(n)
        if name not in _LAYOUT:
            continue
        src = next((a for a in n.all_input_nodes if _tensors(a)), None)
        outs = _tensors(n)
        if src is None or not outs:
            continue
        in_shape, out_shape = _static_shape(_tensors(src)[0]), _static_shape(outs[0])
        if in_shape is None or out_shape is None:
            continue
        total += 1
        perm = _perm(n, len(in_shape)) if name in _TRANSPOSES else None
        if not moves_last_axis(in_shape, out_shape, perm):
            continue
        moving += 1
        padded, _ = _nbytes(outs)
        moving_bytes += padded
        how = f"permutation {perm}" if perm is not None else f"last axis {in_shape[-1] if in_shape else 1} -> {out_shape[-1] if out_shape else 1}"
        out.add("layout_moves_last_axis", n, f"{name} {_fmt(in_shape)} -> {_fmt(out_shape)} ({how}) rewrites every "
                "row in memory; keep the last axis in place (regroup outer axes) or remove the op")
    facts.update(layout_ops=total, layout_ops_moving_last_axis=moving, layout_bytes_moving_last_axis=moving_bytes)


_ARITHMETIC = {"add", "sub", "rsub", "mul", "div", "true_divide", "pow", "where", "masked_fill", "maximum",
               "minimum", "fmod", "remainder", "addcmul", "addcdiv", "lerp", "floor_divide"}


def _float_args(node: torch.fx.Node) -> list[float]:
    """The Python floats among a node's arguments (positional and keyword, in lists too)."""
    found = []
    for v in [*node.args, *node.kwargs.values()]:
        found += [item for item in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(item, float)]
    return found


def _floats(g: _Graph, out: _Findings, facts: dict) -> None:
    """float_literal, float32_value and infinite_mask_value."""
    half = g.dtype == torch.float16
    wide = (torch.float32, torch.float64)
    flagged_consts: set[str] = set()
    for n in g.calls(runtime_only=False):
        runtime = n.name in g.runtime
        literals = _float_args(n)  # operands of arithmetic; for other ops, parameters (eps, momentum, fill values)
        bad = [v for v in literals if math.isinf(v) or (half and abs(v) > FLOAT16_MAX)]
        if bad and (runtime or any(u.name in g.runtime for u in n.users)):
            v = bad[0]
            what = f"{v:g}" if math.isinf(v) else f"{v:g}, beyond float16's +-{FLOAT16_MAX:g} (it becomes {'-' if v < 0 else ''}inf in float16)"
            out.add("infinite_mask_value", n, f"{_op_name(n)} uses {what}; the Neural Engine does not handle inf in a softmax "
                    "(Apple): use a large finite value such as -1e4 (Apple uses -40000)", count=len(bad))
        if not runtime:
            continue
        finite = [v for v in literals if v not in bad]  # an infinite one is infinite_mask_value's finding
        if finite and _op_name(n) in _ARITHMETIC:
            vals = ", ".join(f"{v:g}" for v in finite)
            out.add("float_literal", n, f"{_op_name(n)} with the Python float {vals}: make it a tensor of the model's dtype "
                    "(a buffer, or fold it into a weight)", count=len(finite))
        if half:
            for t in _tensors(n):
                if t.dtype in wide:
                    out.add("float32_value", n, f"{_op_name(n)} computes {str(t.dtype).replace('torch.', '')} {_fmt(t.shape)} in a float16 "
                            "model: remove the upcast (.float(), dtype=torch.float32) or cast back with .to(torch.float16)", tensors=[t])
                    break
            for a in n.all_input_nodes:  # a constant: a weight, a buffer, a tensor made in forward, or folded from them
                const = next(iter(_tensors(a)), None)
                if a.name not in g.runtime and const is not None and const.dtype in wide and a.name not in flagged_consts:
                    flagged_consts.add(a.name)
                    out.add("float32_value", n, f"{_op_name(n)} reads the {str(const.dtype).replace('torch.', '')} constant "
                            f"{a.name} {_fmt(const.shape)} in a float16 model: make it in the model's dtype "
                            "(a buffer follows .half())", tensors=[const])
    for name, const in g.constants.items():  # buffers and constants holding +-inf (e.g. a mask table)
        if not const.is_floating_point() or const.numel() == 0:
            continue
        overflow = half and const.dtype != torch.float16 and bool((const.abs() > FLOAT16_MAX).any())
        if bool(torch.isinf(const).any()) or overflow:
            users = [u for u in next(p for p in g.nodes if p.name == name).users if u.name in g.runtime]
            if users:
                out.add("infinite_mask_value", users[0], f"constant {name} {_fmt(const.shape)} holds "
                        f"{'inf' if not overflow else 'values beyond float16 range'}: use a large finite value such as -1e4",
                        tensors=[const])


_NORM_ROOTS = {"rsqrt", "sqrt", "pow", "reciprocal"}
_REDUCTIONS = {"mean", "var", "var_mean", "sum"}


def _reduction_dims(node: torch.fx.Node, rank: int) -> tuple[int, ...]:
    dims = _arg(node, 1, "dim")
    if dims is None:
        return tuple(range(rank))
    return tuple(sorted(int(d) % rank for d in _pair(dims, 1)))


def _norms(g: _Graph, out: _Findings, facts: dict) -> None:
    """decomposed_norm: a (r)sqrt of a mean of the input, i.e. a LayerNorm/RMSNorm written out."""
    for n in g.calls():
        name = _op_name(n)
        if name not in _NORM_ROOTS or (name == "pow" and _arg(n, 1, "exponent") not in (0.5, -0.5)):
            continue
        frontier, reduction, depth = list(n.all_input_nodes), None, 0
        while frontier and reduction is None and depth < 4:  # mean -> (add eps) -> rsqrt: a few hops back
            reduction = next((a for a in frontier if a.op == "call_function" and _op_name(a) in _REDUCTIONS), None)
            frontier = [b for a in frontier for b in a.all_input_nodes if b.name in g.runtime]
            depth += 1
        if reduction is None or not _tensors(reduction.all_input_nodes[0]):
            continue
        x = _tensors(reduction.all_input_nodes[0])[0]
        rank = x.dim()
        if rank == 0:
            continue
        dims = _reduction_dims(reduction, rank)
        if dims == tuple(range(rank - len(dims), rank)):  # the trailing axes: what F.layer_norm / F.rms_norm take
            out.add("decomposed_norm", n, f"a norm written out over the last axes {list(dims)} of {_fmt(x.shape)}: use "
                    "nn.LayerNorm / F.layer_norm or nn.RMSNorm / F.rms_norm (one op the compiler maps directly)", tensors=[x])
        else:
            # Over the channel axis of (B, C, 1, S) no PyTorch op exists without a transpose that moves the
            # last axis; Apple writes its BC1S norms this way (RMSNorm over dim=1). Not a finding: a fact.
            facts["norms_written_out_not_last_axes"] = facts.get("norms_written_out_not_last_axes", 0) + 1


_SOFTMAX = {"softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax"}
_SDPA = {"scaled_dot_product_attention", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
         "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math"}


def _attention(g: _Graph, out: _Findings, facts: dict) -> None:
    """softmax_spatial_axis, fused_attention, linear_not_conv."""
    for n in g.calls():
        name = _op_name(n)
        if name in _SOFTMAX:
            x = _tensors(n.all_input_nodes[0])[0]
            dim = int(_arg(n, 1, "dim")) % max(x.dim(), 1)
            if x.dim() >= 3 and dim != 1:
                out.add("softmax_spatial_axis", n, f"softmax over axis {dim} of {_fmt(x.shape)}: lay the reduced axis "
                        "(e.g. the keys) on the channel axis 1 and take the softmax there", tensors=[x, *_tensors(n)])
        elif name in _SDPA:
            out.add("fused_attention", n, "scaled_dot_product_attention runs all heads at once: split q, k, v per head and "
                    "use one einsum per head ('bchq,bkhc->bkhq') with a softmax over axis 1")
        elif name == "linear":
            w = _tensors(n.args[1])[0] if isinstance(n.args[1], torch.fx.Node) and _tensors(n.args[1]) else None
            size = f"({w.shape[1]} -> {w.shape[0]})" if w is not None and w.dim() == 2 else ""
            out.add("linear_not_conv", n, f"linear {size} on {_fmt(_tensors(n.args[0])[0].shape)}: use "
                    f"nn.Conv2d(kernel_size=1) on a (B, C, 1, S) tensor (Apple: matmuls are 1x1 convs on the ANE)")


_CONVS = {"conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d", "_convolution"}
_POOLS = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool2d_with_indices"}


def _conv_stride_problem(stride: tuple[int, ...]) -> str | None:
    odd = sorted({p for s in stride for p in _primes(s)} - {2, 3})
    if odd:
        return f"stride {stride} has the prime factor(s) {odd}: use strides made of 2s and 3s (4, 6, 8, 9, 12, 16, 24, 32)"
    if len(set(stride)) > 1:
        small, large = min(stride), max(stride)
        if small > 2:
            return f"unequal large strides {stride}: make them equal or set one to 2"
        if small == 2 and large not in (3, 4, 8, 9):
            return f"mixed strides {stride}: with one stride 2, make the other 3, 4, 8 or 9"
    return None


def _convs_and_pools(g: _Graph, out: _Findings, facts: dict) -> None:
    """conv_stride, large_kernel, large_dilation, pool_stride."""
    for n in g.calls():
        name = _op_name(n)
        if name in _CONVS:
            w = _tensors(n.args[1])[0] if isinstance(n.args[1], torch.fx.Node) and _tensors(n.args[1]) else None
            if w is None:
                continue
            nd = w.dim() - 2
            kernel = tuple(int(k) for k in w.shape[2:])
            transposed = name.startswith("conv_transpose") or (name in ("convolution", "_convolution") and bool(_arg(n, 6, "transposed")))
            stride = _pair(_arg(n, 3, "stride", 1), nd)
            dilation = _pair(_arg(n, 7 if name.startswith("conv_transpose") else 5, "dilation", 1), nd)
            problem = None if transposed else _conv_stride_problem(stride)  # a transposed conv's stride upsamples
            if problem:
                out.add("conv_stride", n, problem)
            if max(kernel, default=1) > LARGE_KERNEL:
                hint = ("a patchify conv (kernel = stride): pixel_unshuffle then a 1x1 conv computes the same"
                        if kernel == stride else "stack smaller kernels (k1 + k2 - 1 = k, e.g. 9 = 5 + 5 - 1)")
                wide = " (widest along the width)" if nd == 2 and kernel[1] > kernel[0] else ""
                out.add("large_kernel", n, f"kernel {kernel}{wide} > {LARGE_KERNEL}: {hint}")
            if max(dilation, default=1) > LARGE_DILATION:
                d = max(dilation)
                chain = f"a chain of dilations {' x '.join(str(p) for p in _factors(d))}" if _primes(d) <= {2, 3} else \
                    "a dilation made of 2s and 3s, in a chain"
                out.add("large_dilation", n, f"dilation {dilation}: use {chain}")
        elif name in _POOLS:
            kernel = _pair(_arg(n, 1, "kernel_size"), n.args[0].meta["val"].dim() - 2)
            stride = _arg(n, 2, "stride")
            stride = kernel if not stride else _pair(stride, len(kernel))
            bad = [s for s in stride if s not in (1, 2, 4)]
            if bad:
                out.add("pool_stride", n, f"pooling stride {stride}: use 2 or 4 (a stride of 1 is not flagged)")


def _factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def _dynamic(g: _Graph, out: _Findings, facts: dict) -> None:
    """dynamic_shape: inputs with symbolic sizes, and outputs whose size depends on data."""
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    for n in g.nodes:
        if n.op == "placeholder" and n.name in g.user_inputs:
            for t in _tensors(n):
                free = [i for i, s in enumerate(t.shape) if _is_free(s)]
                if free:
                    out.add("dynamic_shape", n, f"input {n.name} has symbolic axes {free} {_fmt(t.shape)}: export one "
                            "function per static shape (enumerated shapes or a multifunction program)", tensors=[])
        elif n.op == "call_function" and n.name in g.runtime:
            t = next(iter(_tensors(n)), None)
            if t is not None and free_unbacked_symbols(t) and not any(free_unbacked_symbols(x) for a in n.all_input_nodes for x in _tensors(a)):
                out.add("dynamic_shape", n, f"{_op_name(n)} gives a size that depends on the data {_fmt(t.shape)}: "
                        "the Neural Engine needs static shapes; use a fixed-size formulation (a mask instead of a selection)",
                        tensors=[])


def _is_free(size: Any) -> bool:
    """Whether an axis size is a symbol (not an int, nor a SymInt fixed to one value)."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    return not isinstance(size, int) and not is_concrete_int(size)


_CHECKS = (_rank_and_width, _floats, _layout, _attention, _norms, _convs_and_pools, _dynamic)


def run_checks(ep: torch.export.ExportedProgram, dtype: torch.dtype,
               modules: dict[str, str] | None = None) -> tuple[list[RuleFinding], dict[str, int]]:
    """Every rule on one exported program: ``(findings in graph order per rule group, facts)``.

    ``dtype`` is the precision the model runs at (``torch.float16``: float32 values are
    findings); ``modules`` maps the exported model's module paths to class names, to name
    the submodule of a directly called method (``WindowAttention.forward_bc1s``).
    """
    g = _Graph(ep, dtype, modules)
    found: _Findings = _Findings(g)
    facts: dict[str, int] = {"norms_written_out_not_last_axes": 0}
    for check in _CHECKS:
        check(g, found, facts)
    return found.items, facts

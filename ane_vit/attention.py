"""Multi-head self-attention laid out for the Apple Neural Engine.

``WindowAttention`` takes tokens ``(B*nW, N, C)`` (``N = wh*ww`` tokens of a window, or
of the whole map for global attention) and computes attention in the ANE layout
``(B, C, 1, S)``:

* the q/k/v/output projections are 1x1 convolutions, as Apple maps ``nn.Linear`` in this
  layout (Apple, "Deploying Transformers on the Apple Neural Engine", 2022), and no
  transpose is needed between them;
* with ``split_head=True`` each head gets its own einsum and its own softmax (the
  "split softmax"): every intermediate is at most ``(B, N, 1, N)`` and stays rank 4,
  instead of one ``(B, heads, N, N)`` tensor; with ``split_head=False`` all heads go
  through one fused einsum and one softmax, for comparison;
* position information comes from one of the ``PEType`` variants.

See ``notebooks/03_attention.ipynb`` and ``notebooks/04_position_embeddings.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum, unique

import torch
from torch import nn

from ._checks import flag, positive_int
from .partition import _size, parse_window_size

__all__ = ["PEType", "WindowAttention", "relative_position_index"]


@unique
class PEType(Enum):
    """Position-embedding variants of ``WindowAttention``.

    * ``LePE_ADD``: a learned absolute embedding ``(1, N, C)`` added to the input tokens,
      plus the locally-enhanced position embedding (LePE, CSWin): a 3x3 depthwise conv of
      the values, added to the attention output. The absolute table ties the layer to one
      window size (``N`` tokens).
    * ``LePE_FUSED``: LePE alone, without the absolute table; the depthwise-conv term is
      added once to the concatenated heads. Parameters do not depend on resolution.
      (The seed accepted this name but silently used no position embedding.)
    * ``RPE``: a relative-position bias, one learned table ``((2wh-1)(2ww-1), heads)``
      with one column per head, gathered into a ``(heads, N, N)`` bias (Swin).
    * ``SINGLE_HEAD_RPE``: the same with a single column shared by all heads.
    * ``NONE``: no position embedding inside attention (for example DeiT, whose absolute
      embedding is added once to the patch tokens).
    """

    LePE_ADD = 0
    LePE_FUSED = 1
    RPE = 2
    SINGLE_HEAD_RPE = 3
    NONE = 4


def relative_position_index(window_size: Sequence[int]) -> torch.Tensor:
    """Index into a relative-position table for every (query, key) pair of a window.

    Entry ``[q, k]`` is the row of the ``((2wh-1)*(2ww-1), heads)`` table for the offset
    ``pos(q) - pos(k)``, as in Swin.

    Shapes: ``-> (N, N)`` int64 with ``N = wh*ww``
    """
    wh, ww = parse_window_size(window_size)
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij"))  # (2, wh, ww)
    coords = coords.flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N): pos(q) - pos(k)
    rel = rel.permute(1, 2, 0)  # (N, N, 2)
    row = rel[..., 0] + (wh - 1)  # in [0, 2wh-2]
    col = rel[..., 1] + (ww - 1)  # in [0, 2ww-2]
    return row * (2 * ww - 1) + col  # (N, N)


def _parse_pe_type(pe_type: PEType | str) -> PEType:
    if isinstance(pe_type, PEType):
        return pe_type
    if isinstance(pe_type, str):
        name = pe_type.split(".")[-1]
        for member in PEType:
            if member.name.lower() == name.lower():
                return member
    raise ValueError(f"pe_type must be one of {[m.name for m in PEType]}, got {pe_type!r}")


class WindowAttention(nn.Module):
    """Window (or global) multi-head self-attention in the ANE layout.

    Args:
        dim: channels ``C`` of the tokens.
        window_size: ``(wh, ww)``; the layer attends over ``N = wh*ww`` tokens. For global
            attention pass the whole feature map ``(H, W)``.
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: learn a bias in the q, k and v projections.
        qk_scale: score scale; defaults to ``head_dim ** -0.5``. Applied to ``q`` before the
            product with ``k``, a deliberate deviation: the seed and Apple's ml-ane-transformers
            scale the scores after it. Scaling ``q`` keeps float16 scores finite, and coremltools
            folds the scale into the ``q`` convolution's weights, so it costs no op
            (``notebooks/03_attention.ipynb``).
        attn_drop, proj_drop: dropout on the attention weights and on the output.
        split_head: one einsum + softmax per head (the ANE-friendly split softmax) if True;
            one fused all-heads einsum + softmax if False. Same numbers either way.
        pe_type: a ``PEType`` (or its name).

    Shapes: ``x: (B*nW, N, C) -> (B*nW, N, C)``. The input is never modified; its dtype must
    be the parameters' dtype (``TypeError`` otherwise, for every ``pe_type`` alike).

    Differences from the seed (``vision_transformers.attention_utils``): ``RPE`` learns one
    table column per head (the seed built one column and failed with several heads), the
    input is not modified in place, ``split_head=False`` is a real fused path,
    ``LePE_FUSED`` is a real variant, and the relative-position bias follows Swin's
    orientation ``table[pos(q) - pos(k)]`` where the seed used ``table[pos(k) - pos(q)]``
    (convert a seed table with ``ane_vit.port.seed_rpe_table_to_ane``).
    """

    def __init__(
        self,
        dim: int,
        window_size: Sequence[int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        split_head: bool = True,
        pe_type: PEType | str = PEType.LePE_ADD,
    ):
        super().__init__()
        dim = positive_int(dim, "dim")
        num_heads = positive_int(num_heads, "num_heads")
        if dim % num_heads:
            raise ValueError(f"num_heads must be a positive int that divides dim={dim}, got {num_heads!r}")
        wh, ww = parse_window_size(window_size)
        split_head, qkv_bias = flag(split_head, "split_head"), flag(qkv_bias, "qkv_bias")
        self.dim = dim
        self.window_size = (wh, ww)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        # The scale as a tensor, not a Python float: a float literal in the graph is a float32
        # scalar, which Apple's Neural Engine rules flag (ane_vit.analysis.check_rules). A
        # buffer follows the module's dtype (.half() makes it float16); not in the state dict.
        self.register_buffer("q_scale", torch.tensor(float(self.scale)), persistent=False)
        self.split_head = split_head
        self.pe_type = _parse_pe_type(pe_type)
        n = wh * ww

        if self.pe_type in (PEType.RPE, PEType.SINGLE_HEAD_RPE):
            self.rpe_num_heads = num_heads if self.pe_type == PEType.RPE else 1
            table = torch.zeros((2 * wh - 1) * (2 * ww - 1), self.rpe_num_heads)
            self.relative_position_bias_table = nn.Parameter(nn.init.trunc_normal_(table, std=0.02))
            self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        if self.pe_type == PEType.LePE_ADD:
            self.abs_pe = nn.Parameter(torch.zeros(1, n, dim))
        if self.pe_type in (PEType.LePE_ADD, PEType.LePE_FUSED):
            # LePE: 3x3 depthwise conv over the values, seen as a (wh, ww) image.
            self.lepe = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=qkv_bias)

        # Separate 1x1 convs rather than one fused qkv conv: no split of a 3C-channel
        # tensor is needed afterwards, and each output stays a contiguous (B, C, 1, N) buffer.
        self.q_proj = nn.Conv2d(dim, dim, kernel_size=1, bias=qkv_bias)
        self.k_proj = nn.Conv2d(dim, dim, kernel_size=1, bias=qkv_bias)
        self.v_proj = nn.Conv2d(dim, dim, kernel_size=1, bias=qkv_bias)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def num_tokens(self) -> int:
        return self.window_size[0] * self.window_size[1]

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, "
            f"split_head={self.split_head}, pe_type={self.pe_type.name}"
        )

    def position_bias(self) -> torch.Tensor | None:
        """The relative-position bias in the layout the scores use, or None.

        Shapes: ``-> (heads_rpe, N_k, 1, N_q)``; ``heads_rpe`` is ``num_heads`` (RPE) or 1.
        """
        if self.pe_type not in (PEType.RPE, PEType.SINGLE_HEAD_RPE):
            return None
        n = self.num_tokens
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]  # (N*N, h)
        bias = bias.reshape(n, n, self.rpe_num_heads)  # (N_q, N_k, h)
        return bias.permute(2, 1, 0).unsqueeze(2)  # (h, N_k, 1, N_q): keys on the channel axis

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"WindowAttention expects x of shape (B*nW, N, C), got {shape}")
        if x.shape[1] != self.num_tokens or x.shape[2] != self.dim:
            raise ValueError(
                f"WindowAttention(dim={self.dim}, window_size={self.window_size}) expects "
                f"x of shape (B*nW, {self.num_tokens}, {self.dim}), got {tuple(x.shape)}"
            )
        self._check_dtype(x)

    def _check_dtype(self, x: torch.Tensor) -> None:
        # One rule for every PE type: the input has the parameters' dtype. (Without it, a
        # float64 input failed deep in torch with a bias-type error, and LePE_ADD alone
        # silently promoted a float16 input to float32 through its absolute table.)
        expected = self.q_proj.weight.dtype
        if x.dtype != expected:
            raise TypeError(
                f"WindowAttention has {expected} parameters and expects a {expected} input, got {x.dtype}; "
                f"convert the input (x.to({expected})) or the layer (layer.to({x.dtype}))"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention over tokens.

        Shapes: ``x: (B*nW, N, C) -> (B*nW, N, C)``
        """
        if not torch.jit.is_tracing():  # shapes are fixed while tracing; checks would only warn
            self._check_input(x)
        x = x.permute(0, 2, 1).unsqueeze(2)  # (B, N, C) -> (B, C, 1, N): the ANE layout
        out = self.forward_bc1s(x)  # (B, C, 1, N)
        return out.squeeze(2).permute(0, 2, 1)  # (B, C, 1, N) -> (B, N, C)

    def forward_bc1s(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Attention on input already in the ANE layout: no transpose in or out.

        Models that keep their activations in ``(B, C, 1, S)`` (DeiT here, or a feature map
        ``(B, C, H, W)`` reshaped for global attention) call this directly. ``hw``: the
        ``(H, W)`` of the map for LePE's 3x3 conv (default ``window_size``); a caller that
        passes the sizes it read from its input keeps them traced, so a converted program
        with ``LePE_FUSED`` (or ``NONE``) accepts other resolutions (chapter 9). Axis 2 may
        also hold windows, ``(B, C, nW, N)`` from ``ane_vit.window_partition_nchw``: every
        window attends over its own ``N`` tokens, the einsums batching over axis 2, so local
        attention needs no transpose around the layer either.

        Shapes: ``x: (B, C, nW, N) -> (B, C, nW, N)`` (``nW = 1``: ``(B, C, 1, N)``)
        """
        if not torch.jit.is_tracing() and (
            x.dim() != 4 or x.shape[1] != self.dim or x.shape[3] != self.num_tokens or x.shape[2] < 1
        ):
            raise ValueError(
                f"WindowAttention.forward_bc1s expects windows (B, {self.dim}, nW, {self.num_tokens}) "
                f"or x of shape (B, {self.dim}, 1, {self.num_tokens}), got {tuple(x.shape)}"
            )
        if not torch.jit.is_tracing():
            self._check_dtype(x)
        if self.pe_type == PEType.LePE_ADD:
            # a new tensor: the caller's input is left untouched
            x = x + self.abs_pe.permute(0, 2, 1).unsqueeze(2)  # (1, N, C) -> (1, C, 1, N), folded at conversion
        q = self.q_proj(x) * self.q_scale  # (B, C, nW, N); scaling q, not the N x N scores, keeps fp16 scores small
        k = self.k_proj(x)  # (B, C, nW, N)
        v = self.v_proj(x)  # (B, C, nW, N)
        bias = self.position_bias()  # (h, N_k, 1, N_q) or None
        if self.split_head:
            out = self._split_head_attention(q, k, v, bias)
        else:
            out = self._fused_attention(q, k, v, bias)  # (B, C, nW, N)
        if self.pe_type in (PEType.LePE_ADD, PEType.LePE_FUSED):
            out = out + self._lepe(v, hw)
        return self.proj_drop(self.proj(out))  # (B, C, nW, N)

    def _lepe(self, v: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        b, c, n_windows, n = v.shape
        if _size(n_windows) == 1:
            h, w = self.window_size if hw is None else hw
            v_2d = v.reshape(b, c, h, w)  # (B, C, 1, N) -> (B, C, h, w): a view in PyTorch (row-major)
            return self.lepe(v_2d).reshape(b, c, 1, n)  # (B, C, 1, N)
        # The 3x3 filter must not reach across window borders: one image per window.
        v_2d = v.permute(0, 2, 1, 3).reshape(b * n_windows, c, *self.window_size)  # (B*nW, C, wh, ww)
        out = self.lepe(v_2d).reshape(b, n_windows, c, n)  # (B, nW, C, N)
        return out.permute(0, 2, 1, 3)  # (B, C, nW, N)

    def _split_head_attention(self, q, k, v, bias):
        d = self.head_dim
        # Axis 2 (letter h) is 1, or the windows: the einsums batch over it.
        heads_q = q.split(d, dim=1)  # h x (B, d, nW, N_q)
        heads_v = v.split(d, dim=1)  # h x (B, d, nW, N_k)
        # Transpose once, then split: cheaper than one transpose per head.
        heads_k = k.permute(0, 3, 2, 1).split(d, dim=3)  # (B, N_k, nW, C) -> h x (B, N_k, nW, d)
        outs = []
        for i in range(self.num_heads):
            scores = torch.einsum("bchq,bkhc->bkhq", heads_q[i], heads_k[i])  # (B, N_k, nW, N_q)
            if bias is not None:
                scores = scores + bias[i if self.rpe_num_heads > 1 else 0]  # + (N_k, 1, N_q), the same for every window
            weights = self.attn_drop(scores.softmax(dim=1))  # softmax over keys, the channel axis
            outs.append(torch.einsum("bkhq,bchk->bchq", weights, heads_v[i]))  # (B, d, nW, N_q)
        return torch.cat(outs, dim=1)  # (B, C, nW, N_q)

    def _fused_attention(self, q, k, v, bias):
        b, c, n_windows, n = q.shape
        h, d = self.num_heads, self.head_dim
        if _size(n_windows) > 1:
            return self._fused_window_attention(q, k, v, bias)
        q = q.reshape(b, h, d, n)  # (B, C, 1, N) -> (B, h, d, N_q)
        k = k.reshape(b, h, d, n)  # (B, h, d, N_k)
        v = v.reshape(b, h, d, n)  # (B, h, d, N_k)
        scores = torch.einsum("bhdq,bhdk->bhkq", q, k)  # (B, h, N_k, N_q): all heads at once
        if bias is not None:
            scores = scores + bias.squeeze(2).unsqueeze(0)  # + (1, h|1, N_k, N_q)
        weights = self.attn_drop(scores.softmax(dim=2))  # softmax over keys
        out = torch.einsum("bhkq,bhdk->bhdq", weights, v)  # (B, h, d, N_q)
        return out.reshape(b, c, 1, n)  # (B, h, d, N_q) -> (B, C, 1, N_q)

    def _fused_window_attention(self, q, k, v, bias):
        b, c, n_windows, n = q.shape
        h, d = self.num_heads, self.head_dim
        q = q.reshape(b, h, d, n_windows, n)  # (B, C, nW, N) -> (B, h, d, nW, N_q): rank 5
        k = k.reshape(b, h, d, n_windows, n)  # (B, h, d, nW, N_k)
        v = v.reshape(b, h, d, n_windows, n)  # (B, h, d, nW, N_k)
        scores = torch.einsum("bhdwq,bhdwk->bhwkq", q, k)  # (B, h, nW, N_k, N_q): all heads at once
        if bias is not None:
            scores = scores + bias.squeeze(2).unsqueeze(1)  # + (h|1, 1, N_k, N_q)
        weights = self.attn_drop(scores.softmax(dim=3))  # softmax over keys
        out = torch.einsum("bhwkq,bhdwk->bhdwq", weights, v)  # (B, h, d, nW, N_q)
        return out.reshape(b, c, n_windows, n)  # (B, h, d, nW, N_q) -> (B, C, nW, N_q)

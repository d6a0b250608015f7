"""Layer normalisation over the channel axis, for activations in the ANE layout.

``nn.LayerNorm`` normalises the *last* axis, which suits tokens ``(B, N, C)``. In the ANE
layout ``(B, C, 1, S)`` the channels are on axis 1, so using ``nn.LayerNorm`` there would
need a transpose before and after every norm. ``LayerNormANE`` normalises axis 1 instead
(as Apple's ``ml-ane-transformers`` does), so a model can stay in ``(B, C, 1, S)`` from
the first layer to the last. Its parameters are named and shaped as ``nn.LayerNorm``'s
(``weight: (C,)``, ``bias: (C,)``), so ``load_state_dict`` copies one into the other.

One op in the converted program: coremltools fuses the arithmetic of a channel-axis
LayerNorm into one ``layer_norm`` op only in the form Apple's ``ml-ane-transformers`` writes,
``(x_hat + bias / weight) * weight`` (pattern 5 of its ``fuse_layernorm_or_instancenorm``
pass, which folds ``bias / weight * weight`` back into the op's ``beta`` at conversion).
The textbook order ``x_hat * weight + bias`` converts to a ``layer_norm`` without scale and
shift followed by a separate ``batch_norm`` op holding them: one more op and one more
activation per norm. So ``LayerNormANE`` uses the folded order whenever it is safe (every
weight non-zero and ``|bias / weight|`` far from float16 overflow) and the textbook order
otherwise; both compute the same function.

When the order is decided: the choice depends on the weight *values*, and ``torch.export``
(the entry of Core AI, PT2E quantization and ExecuTorch) traces with value-less "fake"
parameters, so it cannot be made inside ``forward`` there. ``LayerNormANE`` decides outside
``forward``: at construction, in ``train()`` / ``eval()``, after ``load_state_dict``, after
``.to()`` / ``.half()``, and in any eager or ``torch.jit.trace`` call whose weights changed
since the last decision (PyTorch's version counter on the parameters tells). Under
``torch.export`` / ``torch.compile`` the last decision is used as it stands; so
``torch.export.export(model.eval(), ...)`` always sees a fresh one. If you change weights in
place and export without calling ``eval()`` (or running the model once), call
``refresh_fold()`` first.

See ``notebooks/01_ane_layout.ipynb`` for the layout, and ``ane_vit.deit`` for a model
that uses it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ._checks import flag, positive_int

__all__ = ["LayerNormANE"]

#: Largest ``|bias / weight|`` folded into the input of the scale (float16 tops out at
#: 65504; the normalised values, at most sqrt(C) in size, are added to it first).
_MAX_FOLDED_SHIFT = 2.0**14


def _refresh_after_load(module: LayerNormANE, _incompatible_keys) -> None:
    """``load_state_dict`` post hook (a module-level function, so the module still pickles)."""
    module.refresh_fold()


class LayerNormANE(nn.Module):
    """LayerNorm over the channel axis (axis 1) of a channels-first tensor.

    Computes, at every position, ``(x - mean_C(x)) / sqrt(var_C(x) + eps) * weight + bias``
    with the biased variance, exactly as ``nn.LayerNorm(C)`` does on the last axis of the
    transposed tensor. Any rank >= 2 works: ``(B, C, 1, S)`` for transformer tokens,
    ``(B, C, H, W)`` for a feature map.

    Args:
        num_channels: ``C``, the size of axis 1.
        eps: added to the variance, as in ``nn.LayerNorm`` (default 1e-5).
        elementwise_affine: learn ``weight`` (init 1) and ``bias`` (init 0).

    Shapes: ``x: (B, C, 1, S) -> (B, C, 1, S)`` (generally ``(B, C, *) -> (B, C, *)``)
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        num_channels = positive_int(num_channels, "num_channels")
        elementwise_affine = flag(elementwise_affine, "elementwise_affine")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.num_channels = num_channels
        self.eps = float(eps)
        # eps as a buffer, not a Python float: a float literal is a float32 scalar in the
        # exported graph (Apple's Neural Engine rules; chapter 11), a buffer follows .half().
        # Not persistent: state dicts stay those of nn.LayerNorm.
        self.register_buffer("eps_value", torch.tensor(self.eps), persistent=False)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        # The affine order, decided from the weight values outside forward (module docstring).
        self._fold_shift = True
        self._fold_key: tuple | None = None
        self.refresh_fold()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    @property
    def fold_shift(self) -> bool:
        """Whether ``forward`` uses the folded order ``(x_hat + bias / weight) * weight``
        (one ``layer_norm`` op after conversion) rather than ``x_hat * weight + bias``."""
        return self._use_folded_order()

    def refresh_fold(self) -> bool:
        """Decide the affine order from the current weight values; returns the decision.

        Called for you at construction, by ``train()`` / ``eval()``, after ``load_state_dict``
        and after ``.to()``; call it yourself only after changing weights in place if you then
        export without calling ``eval()``.
        """
        if self.weight is not None:
            self._fold_shift = self._can_fold_shift()
            self._fold_key = self._weights_key()
        return self._fold_shift

    def train(self, mode: bool = True) -> LayerNormANE:
        super().train(mode)
        self.refresh_fold()  # model.eval() before torch.export: a decision from today's weights
        return self

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        with torch.no_grad():  # .double() after float32: eps from its Python value, not re-rounded
            self.eps_value.fill_(self.eps)
        self.refresh_fold()  # .half() can turn a tiny weight into 0
        return out

    def _weights_key(self) -> tuple:
        w, b = self.weight, self.bias
        return (w._version, b._version, w.data_ptr(), b.data_ptr(), w.dtype, w.device)

    def _use_folded_order(self) -> bool:
        if self.weight is None:
            return False
        if torch.compiler.is_compiling():
            # torch.export / torch.compile: parameters are fake (no values); use the decision
            # made outside forward, which would otherwise be a data-dependent guard here.
            return self._fold_shift
        if self._weights_key() != self._fold_key:  # weights changed in place, or were replaced
            self.refresh_fold()
        return self._fold_shift

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``x: (B, C, 1, S) -> (B, C, 1, S)``"""
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"LayerNormANE({self.num_channels}) expects a torch.Tensor of shape (B, {self.num_channels}, ...), "
                f"e.g. (B, {self.num_channels}, 1, S); got {type(x).__name__}"
            )
        if not torch.jit.is_tracing() and (x.dim() < 2 or x.shape[1] != self.num_channels):
            raise ValueError(
                f"LayerNormANE({self.num_channels}) expects x of shape (B, {self.num_channels}, ...), "
                f"e.g. (B, {self.num_channels}, 1, S); got {tuple(x.shape)}"
            )
        # Two passes (mean, then the mean of squared deviations) rather than E[x^2] - E[x]^2:
        # the one-pass form cancels catastrophically in float16, the ANE's precision.
        centred = x - x.mean(dim=1, keepdim=True)  # (B, C, *)
        var = (centred * centred).mean(dim=1, keepdim=True)  # (B, 1, *)
        out = centred * torch.rsqrt(var + self.eps_value)  # (B, C, *)
        if self.weight is None:
            return out
        affine_shape = (1, self.num_channels) + (1,) * (x.dim() - 2)
        if self._use_folded_order():
            # (x_hat + bias/weight) * weight: the order coremltools fuses into ONE layer_norm op
            # carrying weight and bias (it folds bias/weight*weight back into beta at conversion).
            shift = (self.bias / self.weight).reshape(affine_shape)  # (C,) -> (1, C, 1, 1)
            return (out + shift) * self.weight.reshape(affine_shape)
        # the textbook order; converts to layer_norm + a separate batch_norm (two ops)
        return out * self.weight.reshape(affine_shape) + self.bias.reshape(affine_shape)  # (C,) -> (1, C, 1, 1)

    def _can_fold_shift(self) -> bool:
        """True when ``bias / weight`` is finite and well inside the float16 range.

        The folded order loses nothing beyond rounding ``bias`` to the working precision
        (the error of ``x_hat + bias/weight`` is scaled back by ``weight``), but it cannot
        express a zero weight and would overflow float16 for a tiny one.
        """
        if self.weight is None:
            return False
        if self.weight.is_meta:  # shapes only (no values): either order gives the same shapes
            return True
        with torch.no_grad(), warnings.catch_warnings():
            # A trace freezes parameters as constants, so freezing this branch with them is right.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            w, b = self.weight.detach().float(), self.bias.detach().float()
            return bool(torch.all(w != 0) and torch.all(b.abs() <= _MAX_FOLDED_SHIFT * w.abs()))

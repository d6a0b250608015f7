"""Load a state dict saved from the seed's MOAT (``ml-vision-transformers-ane``) into ours.

The seed's ``vision_transformers.model.MOAT`` and ``ane_vit.moat.MOAT`` hold the same
tensors under other names (``_blocks.2.0._window_attention.q_proj.weight`` is our
``stages.2.0.attention.q_proj.weight``); the one tensor that changes is the relative-position
table, stored by the seed as ``(2wh-1, 2ww-1, heads)`` with the opposite offset sign
(``seed_rpe_table_to_ane``). ``seed_key`` gives the seed's name of each of our keys;
``load_seed_state_dict`` checks a whole seed state dict (every key present, none left
over, every shape as expected, every value a finite tensor of the right kind) before it
copies anything. ``to_seed_state_dict`` is the
inverse, for round trips and for handing our weights back to code that uses the seed's names.
See ``book/seed_names.md``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

from ..attention import WindowAttention
from ..moat import MOAT
from .attention import seed_rpe_table_to_ane

__all__ = ["seed_key", "load_seed_state_dict", "to_seed_state_dict"]

# Our MBConv sub-module names -> the seed's (vision_transformers/mbconv.py).
_MBCONV = {
    "pre_norm": "pre_norm_layer",
    "expand": "_expand_conv",
    "expand_norm": "_bn0",
    "depthwise": "_depthwise_conv",
    "depthwise_norm": "_bn1",
    "se.reduce": "_se_reduce",
    "se.expand": "_se_expand",
    "project": "_project_conv",
    "project_norm": "_bn2",
    "shortcut_conv": "shortcut_conv",
}
# Our WindowAttention names -> the seed's (vision_transformers/attention_utils.py).
_ATTENTION = {"lepe": "LePE_for_Value", "q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "proj": "proj"}
_RPE_TABLE = "relative_position_bias_table"
_SHOWN = 8  # keys listed in an error message


def _rename_module(path: str, table: Mapping[str, str]) -> str | None:
    """``'se.reduce.weight'`` -> ``'_se_reduce.weight'`` with ``table``; None if not in it."""
    module, _, param = path.rpartition(".")
    return f"{table[module]}.{param}" if module in table else None


def seed_key(key: str) -> str | None:
    """The seed's state-dict name of our MOAT key, or ``None`` if the seed has no such tensor.

    ``stem.N.*`` -> ``_stem.N.*``; ``stages.i.j.*`` -> ``_blocks.i.j.*`` with the MBConv,
    MOAT-block and attention sub-modules renamed; ``head.*`` (our optional classifier) -> None.
    """
    parts = key.split(".")
    if parts[0] == "stem":
        return "_" + key
    if parts[0] != "stages" or len(parts) < 4:
        return None
    prefix, rest = f"_blocks.{parts[1]}.{parts[2]}", ".".join(parts[3:])
    if rest.startswith("mbconv."):
        inner = _rename_module(rest[len("mbconv."):], _MBCONV)
        return None if inner is None else f"{prefix}._mbconv.{inner}"
    if rest.startswith("attn_norm."):
        return f"{prefix}._attn_norm.{rest[len('attn_norm.'):]}"
    if rest.startswith("attention."):
        inner = rest[len("attention."):]
        if inner in (_RPE_TABLE, "abs_pe"):
            return f"{prefix}._window_attention.{inner}"
        inner = _rename_module(inner, _ATTENTION)
        return None if inner is None else f"{prefix}._window_attention.{inner}"
    inner = _rename_module(rest, _MBCONV)
    return None if inner is None else f"{prefix}.{inner}"


def _attention_modules(model: MOAT) -> dict[str, WindowAttention]:
    return {name: m for name, m in model.named_modules() if isinstance(m, WindowAttention)}


def _seed_table_shape(attn: WindowAttention) -> tuple[int, int, int]:
    wh, ww = attn.window_size
    return (2 * wh - 1, 2 * ww - 1, attn.relative_position_bias_table.shape[1])


def _plan(model: MOAT) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Seed key -> (our key, the shape the seed stores it in), for every tensor the seed has."""
    attention = _attention_modules(model)
    plan: dict[str, tuple[str, tuple[int, ...]]] = {}
    for ours, tensor in model.state_dict().items():
        theirs = seed_key(ours)
        if theirs is None:
            continue
        shape = tuple(tensor.shape)
        if ours.endswith("." + _RPE_TABLE):
            shape = _seed_table_shape(attention[ours[: -len(_RPE_TABLE) - 1]])
        plan[theirs] = (ours, shape)
    return plan


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _value_problem(value: torch.Tensor, dest: torch.Tensor) -> str | None:
    """Why ``value`` cannot become ``dest`` (a parameter or buffer of ours), or None.

    A weight is a finite floating-point tensor with data; an integer buffer (batch norm's
    ``num_batches_tracked``) an integer tensor. ``copy_`` would convert an int, bool or
    complex tensor without a word (dropping an imaginary part) and load NaN or inf as is.
    """
    if value.is_meta:
        return "a meta tensor (a shape without data)"
    if value.layout != torch.strided:
        return f"a {str(value.layout).replace('torch.', '')} tensor, expected a dense one"
    if dest.is_floating_point():
        if not value.is_floating_point():
            return f"dtype {value.dtype}, expected a floating-point tensor (the model holds {dest.dtype})"
        nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
        if nan or inf:
            return " and ".join(f"{n} {what} value(s)" for n, what in ((nan, "NaN"), (inf, "inf")) if n)
    elif value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        return f"dtype {value.dtype}, expected an integer tensor (the model holds {dest.dtype})"
    return None


@contextmanager
def _interrupt_after() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise ``KeyboardInterrupt``.

    The copy into the model is all or nothing: an interrupt half-way would leave a model
    with some tensors old and some new. The held-back signal goes to the handler that was
    there before (Python's default raises ``KeyboardInterrupt``; an ignored SIGINT stays
    ignored). Only the main thread can install signal handlers; elsewhere the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # now, to the previous handler


@torch.no_grad()
def load_seed_state_dict(model: MOAT, state_dict: Mapping[str, torch.Tensor]) -> MOAT:
    """Copy a seed MOAT's state dict into ``model`` in place; returns ``model``.

    Every key of ``state_dict`` must have a place in ``model`` and every tensor of the seed's
    layout in ``model`` must be in ``state_dict`` (batch-norm statistics included), with the
    shape the seed stores it in, holding data (not a meta tensor), finite (no NaN, no inf),
    of the right kind (floating point for weights and statistics, an integer for
    ``num_batches_tracked``; any float precision is converted). Relative-position tables are
    flipped into our orientation (``seed_rpe_table_to_ane``). Nothing is copied unless
    everything fits: every value is checked and converted before the first copy, and a
    Ctrl-C during the copy is held back until the copy is complete.

    The model must be built with the seed's settings: same ``base_arch``, input size,
    ``attention_mode``, ``pe_type`` and ``channel_buffer_align``, no ``num_classes`` (the
    seed has no classifier). ``split_head`` may differ. A seed ``LePE_FUSED`` model has no
    position parameters (its LePE was a silent no-op), so it loads into ours with
    ``PEType.NONE``; the seed's ``RPE`` always had one table column.

    Raises:
        TypeError: ``model`` is not an ``ane_vit.moat.MOAT`` or ``state_dict`` not a mapping of tensors.
        ValueError: listing the unexpected keys, the missing keys, each key whose shape
            differs (expected and got) and each value that cannot be loaded (meta, NaN or
            inf, an int/bool/complex tensor for a weight); the model is then unchanged.

    Shapes: seed ``relative_position_bias_table (2wh-1, 2ww-1, h)`` -> ours ``((2wh-1)*(2ww-1), h)``.
    """
    if not isinstance(model, MOAT):
        raise TypeError(f"model must be an ane_vit.moat.MOAT, got {type(model).__name__}")
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    plan = _plan(model)
    unexpected = [k for k in state_dict if k not in plan]
    missing = [k for k in plan if k not in state_dict]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) that the model has no place for: {_listing(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} missing key(s) that the model needs: {_listing(missing)}")
    if model.head is not None:
        problems.append("the model has a classifier head (num_classes) that the seed's MOAT does not have")
    wrong = [
        f"{k}: expected {plan[k][1]}, got {tuple(v.shape)}"
        for k, v in state_dict.items()
        if k in plan and tuple(v.shape) != plan[k][1]
    ]
    if wrong:
        problems.append(f"{len(wrong)} key(s) of the wrong shape: " + "; ".join(wrong[:_SHOWN]) + ("; ..." if len(wrong) > _SHOWN else ""))
    ours = model.state_dict()  # tensors share storage with the model's parameters and buffers
    bad = [f"{k}: {why}" for k, v in state_dict.items() if k in plan
           for why in [_value_problem(v, ours[plan[k][0]])] if why is not None]
    if bad:
        problems.append(f"{len(bad)} value(s) that cannot be loaded: " + "; ".join(bad[:_SHOWN]) + ("; ..." if len(bad) > _SHOWN else ""))
    if problems:
        raise ValueError(
            f"the state dict does not fit this {model.config.base_arch} ({model.config.attention_mode}, "
            f"{model.config.pe_type.name}, {tuple(model.config.image_size)}); nothing was copied: " + ". ".join(problems)
        )
    # Convert everything first (a failure here leaves the model untouched), then copy tensors
    # of identical shape, dtype and device, which cannot fail half-way.
    staged = {}
    for theirs, (key, _) in plan.items():
        value = state_dict[theirs]
        if key.endswith("." + _RPE_TABLE):
            value = seed_rpe_table_to_ane(value)  # (2wh-1, 2ww-1, h) -> ((2wh-1)*(2ww-1), h), offsets flipped
        staged[key] = value.to(device=ours[key].device, dtype=ours[key].dtype, copy=True)
    with _interrupt_after():
        for key, value in staged.items():
            ours[key].copy_(value)
    return model


@torch.no_grad()
def to_seed_state_dict(model: MOAT) -> dict[str, torch.Tensor]:
    """``model``'s tensors under the seed's names and layout (the inverse of ``load_seed_state_dict``).

    Raises ``ValueError`` for a model with a classifier head (the seed has none).

    Shapes: ours ``relative_position_bias_table ((2wh-1)*(2ww-1), h)`` -> seed ``(2wh-1, 2ww-1, h)``.
    """
    if not isinstance(model, MOAT):
        raise TypeError(f"model must be an ane_vit.moat.MOAT, got {type(model).__name__}")
    if model.head is not None:
        raise ValueError("the model has a classifier head (num_classes) that the seed's MOAT does not have")
    ours = model.state_dict()
    out = {}
    for theirs, (key, shape) in _plan(model).items():
        value = ours[key].detach().clone()
        if key.endswith("." + _RPE_TABLE):
            value = value.reshape(shape).flip(0, 1)  # ((2wh-1)*(2ww-1), h) -> (2wh-1, 2ww-1, h), offsets flipped back
        out[theirs] = value
    return out

"""The digits classifier: a micro-moat for 64x64 inputs and 10 classes, with shipped weights.

The architecture is the registry entry ``micro-moat`` of ``ane_vit.moat.ARCHITECTURES``
(global attention, LePE, 64x64 input, ~0.28 M parameters). Training
(``ane_vit.digits.train``) runs the plain reference model; its float32 state dict ships as
``ane_vit/data/digits_micro_moat.pt`` with the training record ``digits_micro_moat.json``.
The ANE model gets the same weights through ``ane_vit.port.moat.port_moat_weights``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from .data import IMAGE_SIZE, NUM_CLASSES

__all__ = ["ARCH", "KINDS", "WEIGHTS_FILE", "RECORD_FILE", "weights_path", "build_digits_model", "load_state", "load_model",
           "load_record"]

#: The registry entry the digits model is built from.
ARCH = "micro-moat"
#: What ``load_model`` can return: the ANE-laid-out model or its plain reference twin.
KINDS = ("ane", "reference")
#: File names of the shipped weights and of their training record, under ``ane_vit/data/``.
WEIGHTS_FILE = "digits_micro_moat.pt"
RECORD_FILE = "digits_micro_moat.json"


def weights_path(name: str = WEIGHTS_FILE) -> Path:
    """Path of a file shipped under ``ane_vit/data/``."""
    return Path(str(resources.files("ane_vit") / "data" / name))


def build_digits_model(kind: str = "ane", batch: int = 1) -> nn.Module:
    """A freshly initialised digits model (training mode), ANE layout or plain reference.

    Shapes: ``x: (B, 3, 64, 64) -> (B, 10)`` logits.

    Raises:
        ValueError: if ``kind`` is not ``"ane"`` or ``"reference"``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shape = (batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    if kind == "ane":
        from ..moat import build_model

        return build_model(shape, ARCH, attention_mode="global", num_classes=NUM_CLASSES)[1]
    from ..reference.moat import build_reference_model

    return build_reference_model(shape, ARCH, attention_mode="global", num_classes=NUM_CLASSES)[1]


_HOW = "give a state dict saved by `python -m ane_vit.digits train` (or leave out --weights for the shipped one)"
_SHOWN = 4  # keys named in a message


def _keys(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def load_state(weights: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The reference model's state dict from a weights file, checked before any use.

    ``torch.load(..., weights_only=True)`` reads the file; then every key of the reference
    digits model must be there, none other, each with its shape, each a finite tensor of its
    kind (floating point for weights and statistics, integer for ``num_batches_tracked``).
    A model with one NaN weight predicts one class for every image (10 % accuracy): refused.

    Args:
        weights: a state dict file (default: the shipped ``ane_vit/data/digits_micro_moat.pt``);
            ``~`` is expanded.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and what is wrong: a folder, a file ``torch.load`` cannot
            read (truncated, not a PyTorch file), not a mapping of names to tensors, missing or
            unexpected keys, wrong shapes, NaN/inf values or a wrong dtype class.
    """
    from ..port.seed import _value_problem

    path = Path(weights).expanduser() if weights is not None else weights_path()
    if path.is_dir():
        raise ValueError(f"digits weights {path} is a folder, not a weights file; {_HOW}")
    if not path.exists():
        raise FileNotFoundError(f"no digits weights at {path}; train them with `python -m ane_vit.digits train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, random bytes, a pickle of other objects: each library error differs
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"digits weights {path} cannot be read by torch.load ({type(err).__name__}: {first[:160]}); "
                         f"the file is damaged or not a PyTorch state dict; {_HOW}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        got = type(state).__name__ if not isinstance(state, dict) else "a dict with non-tensor values or non-string keys"
        raise ValueError(f"digits weights {path} holds {got}, not a state dict (names to tensors); {_HOW}")
    expected = build_digits_model("reference").state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"{len(missing)} of the model's {len(expected)} key(s) missing: {_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_keys(unexpected)}")
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, got {tuple(v.shape)}" for k, v in state.items()
              if k in expected and v.shape != expected[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} key(s) of the wrong shape: {_keys(shapes)}")
    values = [f"{k}: {why}" for k, v in state.items() if k in expected
              for why in [_value_problem(v, expected[k])] if why is not None]
    if values:
        problems.append(f"{len(values)} value(s) that are not weights: {_keys(values)}")
    if problems:
        raise ValueError(f"digits weights {path} do not fit the {ARCH} digits model: {'; '.join(problems)}. {_HOW[0].upper()}{_HOW[1:]}")
    return state


def load_model(kind: str = "ane", weights: str | Path | None = None) -> nn.Module:
    """The trained digits model in eval mode: ``"ane"`` (``ane_vit.moat.MOAT``) or ``"reference"``.

    The reference model loads the shipped state dict, checked by ``load_state`` (keys,
    shapes, finite values); the ANE model receives it through ``port_moat_weights``.

    Args:
        kind: ``"ane"`` or ``"reference"``.
        weights: another state dict file of the reference model (default: the shipped one).

    Shapes: ``x: (N, 3, 64, 64) -> (N, 10)`` logits.

    Raises:
        ValueError: for an unknown ``kind`` or weights that are not the digits model's
            (``load_state`` says what is wrong); FileNotFoundError if the weights are missing.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    state = load_state(weights)
    reference = build_digits_model("reference")
    reference.load_state_dict(state)
    reference.eval()
    if kind == "reference":
        return reference
    from ..port.moat import port_moat_weights

    return port_moat_weights(reference, build_digits_model("ane")).eval()


def load_record(path: str | Path | None = None) -> dict:
    """The training record shipped with the weights (epochs, seed, time, versions, accuracy)."""
    path = Path(path) if path is not None else weights_path(RECORD_FILE)
    return json.loads(path.read_text())

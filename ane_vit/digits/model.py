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

__all__ = ["ARCH", "KINDS", "WEIGHTS_FILE", "RECORD_FILE", "weights_path", "build_digits_model", "load_model", "load_record"]

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


def load_model(kind: str = "ane", weights: str | Path | None = None) -> nn.Module:
    """The trained digits model in eval mode: ``"ane"`` (``ane_vit.moat.MOAT``) or ``"reference"``.

    The reference model loads the shipped state dict (``torch.load(..., weights_only=True)``);
    the ANE model receives it through ``port_moat_weights``.

    Args:
        kind: ``"ane"`` or ``"reference"``.
        weights: another state dict file of the reference model (default: the shipped one).

    Shapes: ``x: (N, 3, 64, 64) -> (N, 10)`` logits.

    Raises:
        ValueError: for an unknown ``kind``; FileNotFoundError if the weights are missing.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(weights) if weights is not None else weights_path()
    if not path.exists():
        raise FileNotFoundError(f"no digits weights at {path}; train them with `python -m ane_vit.digits train`")
    state = torch.load(path, map_location="cpu", weights_only=True)
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

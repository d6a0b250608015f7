"""What the benchmark compares: ``BenchSpec`` (one model, in one implementation) and the
default list of pairs; the public names are re-exported by ``ane_vit.bench``.

Shapes: MOAT ``x: (1, 3, 256, 256) -> 4 NCHW stage maps``; DeiT ``x: (1, 3, 224, 224) ->
(1, 1000)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

_IMPLEMENTATIONS = ("reference", "ane")
Builder = Callable[["BenchSpec"], "tuple[nn.Module, torch.Tensor, Any]"]


@dataclass(frozen=True)
class BenchSpec:
    """One model to benchmark: an architecture at one input size, in one implementation.

    ``implementation="ane"`` builds the ANE layout with the weights of the reference twin
    built from the same ``seed`` (ported), so both programs of a pair compute the same
    function. The reference's weights are randomised first (``ane_vit.testing.randomize_``
    with ``seed``): a fresh model's identity LayerNorms and zero embeddings are removed by
    the converter, and its programs would look smaller than a trained model's. ``builder`` replaces the built-in families (``"moat"``, ``"deit"``): a
    callable ``spec -> (module, example_input, config_or_None)``, e.g. for a tiny test model.

    Shapes: ``example_input: (1, 3, image_size, image_size)`` for the built-in families.
    """

    name: str
    family: str
    implementation: str
    arch: str
    image_size: int
    attention_mode: str = "global"
    pe_type: str = "SINGLE_HEAD_RPE"
    split_head: bool = True
    seed: int = 0
    builder: Builder | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.implementation not in _IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {_IMPLEMENTATIONS}, got {self.implementation!r}")
        if self.builder is None and self.family not in ("moat", "deit"):
            raise ValueError(f"family must be 'moat' or 'deit' (or pass a builder), got {self.family!r}")

    @property
    def pair(self) -> str:
        """The name shared by the two implementations of one model (``name`` minus the suffix)."""
        suffix = "_" + self.implementation
        return self.name[: -len(suffix)] if self.name.endswith(suffix) else self.name

    def example_input(self) -> torch.Tensor:
        """A fixed random image, the same for both implementations of a pair."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(1, 3, self.image_size, self.image_size, generator=gen)

    def build(self) -> tuple[nn.Module, torch.Tensor, Any]:
        """Build ``(module in eval mode, example input, config or None)``."""
        torch.manual_seed(self.seed)
        if self.builder is not None:
            module, example, config = self.builder(self)
        elif self.family == "moat":
            module, example, config = _build_moat(self)
        else:
            module, example, config = _build_deit(self)
        return module.eval(), example, config


def _build_moat(spec: BenchSpec):
    from ..attention import PEType
    from ..moat import build_model
    from ..port.moat import port_moat_weights
    from ..reference.moat import build_reference_model
    from ..testing import randomize_

    shape = (1, 3, spec.image_size, spec.image_size)
    kwargs = dict(shape=shape, base_arch=spec.arch, attention_mode=spec.attention_mode, pe_type=PEType[spec.pe_type])
    config, reference = build_reference_model(**kwargs)
    randomize_(reference, seed=spec.seed)
    if spec.implementation == "reference":
        return reference, spec.example_input(), config
    config, ane = build_model(split_head=spec.split_head, **kwargs)
    return port_moat_weights(reference.eval(), ane), spec.example_input(), config


def _build_deit(spec: BenchSpec):
    from ..deit import DEIT_CONFIGS, build_deit
    from ..port.deit import port_deit_weights
    from ..reference.deit import ReferenceDeiT
    from ..testing import randomize_

    config = DEIT_CONFIGS[spec.arch]
    reference = randomize_(ReferenceDeiT(config, image_size=spec.image_size, num_classes=1000), seed=spec.seed)
    if spec.implementation == "reference":
        return reference, spec.example_input(), config
    ane = build_deit(config, image_size=spec.image_size, num_classes=1000, split_head=spec.split_head)
    return port_deit_weights(reference.eval(), ane), spec.example_input(), config


def default_specs(pe_type: str = "SINGLE_HEAD_RPE") -> list[BenchSpec]:
    """The issue's comparison: reference and ANE tiny-moat-0 and tiny-moat-1 at 256 (global
    and local attention) and DeiT-Tiny at 224; ``pe_type`` as the seed's ``export.py``."""
    specs = []
    for arch in ("tiny-moat-0", "tiny-moat-1"):
        for mode in ("global", "local"):
            for impl in _IMPLEMENTATIONS:
                specs.append(BenchSpec(f"{arch}_256_{mode}_{impl}", "moat", impl, arch, 256, mode, pe_type))
    for impl in _IMPLEMENTATIONS:
        specs.append(BenchSpec(f"deit-tiny_224_{impl}", "deit", impl, "deit-tiny", 224, "global", "NONE"))
    return specs

"""``estimate``: the latency a converted program would take on the Neural Engine, as an ESTIMATE.

The model (``ane_vit.latency.model``) is calibrated on published measurements of one chip; its
coefficients are committed in ``ane_vit/latency/calibrated.py`` (written by
``python -m ane_vit.latency fit``). An estimate is never a measurement: it states the chip, the
measurement source it imitates, an interval calibrated to cover ``level`` of published latencies
of model families the fit never saw, and the analysis findings that say parts of the program may
not run on the Neural Engine (the estimate assumes every op does).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..analysis.program import ModelLike
from .features import analyze_for_latency, readiness_flags, summary_features
from .model import SOURCE_LABELS, LatencyModel

__all__ = ["LatencyEstimate", "calibrated_chips", "calibrated_model", "estimate", "estimate_groups"]


@dataclass(frozen=True)
class LatencyEstimate:
    """An ESTIMATED Neural Engine latency with its interval (not a measurement).

    ``estimate_ms`` is the model's value, ``low_ms``/``high_ms`` the ``level`` interval; ``flags``
    lists analysis findings that say parts may run off the Neural Engine (then the estimate is
    optimistic: it prices every op as if on the NE); ``terms_ms`` splits the estimate.
    """

    estimate_ms: float
    low_ms: float
    high_ms: float
    level: float
    chip: str
    source: str
    flags: tuple[str, ...] = ()
    terms_ms: dict[str, float] = field(default_factory=dict)
    program: dict[str, float] = field(default_factory=dict)
    kind: str = "estimate"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "estimate_ms": self.estimate_ms, "low_ms": self.low_ms, "high_ms": self.high_ms,
                "level": self.level, "chip": self.chip, "source": self.source, "flags": list(self.flags),
                "terms_ms": dict(self.terms_ms), "program": dict(self.program)}

    def __str__(self) -> str:
        text = (f"ESTIMATE {self.estimate_ms:.2f} ms on {self.chip} ({self.level:.0%} interval "
                f"{self.low_ms:.2f}-{self.high_ms:.2f} ms; as {SOURCE_LABELS.get(self.source, self.source)} "
                "would time it; not measured)")
        if self.flags:
            text += "; parts may not run on the Neural Engine: " + ", ".join(self.flags)
        return text


def calibrated_chips() -> list[str]:
    """The chips with a calibrated model (published measurements to fit on)."""
    from .calibrated import MODELS

    return sorted(MODELS)


def calibrated_model(chip: str = "A14") -> LatencyModel:
    """The committed model of ``chip``; ``ValueError`` naming the calibrated chips otherwise."""
    from .calibrated import MODELS

    if not isinstance(chip, str):
        raise TypeError(f"chip must be a chip name such as 'A14', got {type(chip).__name__}")
    wanted = {c.lower(): c for c in MODELS}
    if chip.strip().lower() not in wanted:
        raise ValueError(
            f"no calibration data for chip {chip!r}: the latency estimate is calibrated only for "
            f"{sorted(MODELS)} (published latencies of other chips are too few to fit a model; "
            "appendix A2 uses them as an out-of-chip check)"
        )
    return LatencyModel.from_dict(MODELS[wanted[chip.strip().lower()]])


def estimate_groups(groups, model: LatencyModel, flags: tuple[str, ...] = ()) -> LatencyEstimate:
    """The estimate of a program given as ``op_groups`` (see ``estimate``).

    Shapes: ``groups`` as returned by ``ane_vit.latency.op_groups``.
    """
    t = model.predict(groups)
    low, high = model.interval(t)
    s = summary_features(groups)
    return LatencyEstimate(t, low, high, model.level, model.chip, model.reference_source, tuple(flags),
                           model.terms(groups), {k: float(v) for k, v in s.items()})


def estimate(program: ModelLike, chip: str = "A14", model: LatencyModel | Mapping[str, Any] | None = None,
             warn: bool = True) -> LatencyEstimate:
    """Estimate the Neural Engine latency of a converted program, with an interval.

    Args:
        program: a saved ``.mlpackage`` path, a ``coremltools`` ``MLModel`` (ML Program) or a MIL
            ``Program``.
        chip: the chip to estimate for; only chips with published calibration data are accepted
            (``calibrated_chips()``; today ``A14``), anything else raises ``ValueError``.
        model: a ``LatencyModel`` (or its dict) to use instead of the committed one.
        warn: issue a ``UserWarning`` when the program's analysis findings say parts of it may
            not run on the Neural Engine (they are in ``flags`` either way).

    Returns:
        a ``LatencyEstimate`` (``kind == "estimate"``): value, interval, chip, flags, terms.

    Shapes: any fixed-shape ML Program (batch 1 as calibrated; e.g. ``x: (1, 3, 256, 256)``).
    """
    if model is None:
        model = calibrated_model(chip)
    elif isinstance(model, Mapping):
        model = LatencyModel.from_dict(model)
    elif not isinstance(model, LatencyModel):
        raise TypeError(f"model must be a LatencyModel, its dict or None, got {type(model).__name__}")
    if model is not None and chip.strip().lower() != model.chip.lower():
        raise ValueError(f"the model given is calibrated for {model.chip!r}, not for chip {chip!r}")
    groups, report = analyze_for_latency(program)
    flags = tuple(readiness_flags(report))
    if flags and warn:
        warnings.warn(
            f"{report.source}: parts of this program may not run on the Neural Engine ({', '.join(flags)}); "
            "the latency estimate assumes every op does, so it is likely optimistic",
            UserWarning,
            stacklevel=2,
        )
    return estimate_groups(groups, model, flags)

"""Neural Engine latency ESTIMATES from a converted program, calibrated on published measurements.

No device is needed and none is claimed: ``estimate(program, chip="A14")`` prices the program's
ops with a model fitted to latencies that others published for models we can build (MobileOne,
FastViT, EfficientFormer, RepViT, ... on the A14 of iPhone 12), and states an 80 % interval that
was checked on model families the fit never saw (leave one family out). Chips without published
calibration data are refused; programs whose analysis findings say parts may not run on the
Neural Engine are flagged (the estimate assumes every op does).

Command line: ``python -m ane_vit.latency estimate model.mlpackage``; ``... fit`` refits the
model from ``results/latency_estimate/calibration.json`` (written by ``.ci/calibrate_latency.py``);
``... apply`` estimates this book's models. See ``notebooks/A2_latency_estimate.ipynb``.
"""

# The code lives in one module per concept:
#   features   per-op FLOPs and padded traffic of a program (op_groups), the regressors
#   model      the model forms, the fit, leave-one-family-out validation, the interval
#   estimate   estimate(program, chip): the committed model applied to a program
#   calibrated the committed coefficients (written by `python -m ane_vit.latency fit`)
#   report     the validation report and the application (results/latency_estimate/)
#   cli        the command line (python -m ane_vit.latency, run by __main__.py)
from __future__ import annotations

from .estimate import LatencyEstimate, calibrated_chips, calibrated_model, estimate, estimate_groups
from .features import (
    FEATURE_NAMES,
    OP_KINDS,
    analyze_for_latency,
    features,
    op_groups,
    op_kind,
    readiness_flags,
    summary_features,
)
from .model import (
    BALANCE_GRID,
    DEFAULT_FORM,
    FORMS,
    LEVEL,
    REFERENCE_SOURCE,
    SOURCE_LABELS,
    LatencyModel,
    Point,
    calibration_points,
    conformal_halfwidth,
    fit_form,
    fit_model,
    lofo,
    nested_coverage,
)

__all__ = [
    "estimate",
    "estimate_groups",
    "LatencyEstimate",
    "calibrated_chips",
    "calibrated_model",
    "op_groups",
    "op_kind",
    "features",
    "summary_features",
    "readiness_flags",
    "analyze_for_latency",
    "OP_KINDS",
    "FEATURE_NAMES",
    "FORMS",
    "DEFAULT_FORM",
    "BALANCE_GRID",
    "REFERENCE_SOURCE",
    "LEVEL",
    "SOURCE_LABELS",
    "Point",
    "LatencyModel",
    "calibration_points",
    "fit_form",
    "fit_model",
    "lofo",
    "conformal_halfwidth",
    "nested_coverage",
]

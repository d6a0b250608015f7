"""The latency model's files: calibration data in, validation report and estimates out.

* ``load_calibration`` reads ``results/latency_estimate/calibration.json`` (written by
  ``.ci/calibrate_latency.py``) and checks its provenance;
* ``validation_report`` fits every candidate form, validates them leave-one-family-out, checks
  the interval on unseen families (``nested_coverage``), and adds the per-source bias and the
  out-of-chip check: what ``python -m ane_vit.latency fit`` writes to
  ``results/latency_estimate/model.json``;
* ``write_calibrated_module`` writes the chosen model's numbers to
  ``ane_vit/latency/calibrated.py``, which ``estimate`` uses;
* ``apply_estimates`` estimates this book's models (and the programs of
  ``results/latency_estimate/external_programs.json``): ``results/latency_estimate/estimates.json``, every
  number of kind ``estimate``.

The files live in ``results/latency_estimate/``, apart from chapter 7's ``results/latency_*.json``,
which hold device measurements only: an estimate never sits where a measurement is read.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .model import (
    DEFAULT_FORM,
    FORMS,
    LEVEL,
    REFERENCE_SOURCE,
    LatencyModel,
    Point,
    _predict_for,
    calibration_points,
    fit_form,
    fit_model,
    lofo,
    nested_coverage,
)

__all__ = [
    "CALIBRATION_FILE",
    "MODEL_FILE",
    "ESTIMATES_FILE",
    "EXTERNAL_FILE",
    "results_path",
    "load_calibration",
    "load_json",
    "validation_report",
    "write_calibrated_module",
    "apply_estimates",
]

CALIBRATION_FILE = "latency_estimate/calibration.json"
MODEL_FILE = "latency_estimate/model.json"
ESTIMATES_FILE = "latency_estimate/estimates.json"
EXTERNAL_FILE = "latency_estimate/external_programs.json"
_PROVENANCE = ("what", "date_utc", "command", "versions", "conversion", "model", "table")


def results_path(name: str) -> Path:
    """``results/<name>`` of this repository (the book's data folder)."""
    return Path(__file__).resolve().parents[2] / "results" / name


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    """A results file as a dict, with a clear error when it is missing or not JSON."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"expected the results file {str(path)!r}; it does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from err


def load_calibration(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``results/latency_estimate/calibration.json`` (or ``path``), its provenance checked."""
    path = Path(path) if path is not None else results_path(CALIBRATION_FILE)
    data = load_json(path)
    prov = data.get("provenance", {})
    missing = [k for k in _PROVENANCE if k not in prov]
    if missing or "rows" not in data or "programs" not in data:
        raise ValueError(f"{str(path)!r} is not a latency calibration file: provenance lacks {missing}, "
                         f"top-level keys {sorted(data)} (expected provenance, rows, programs)")
    return data


def _inside(published: float, estimate: float, halfwidth: float) -> bool:
    """Is ``published`` within the interval, on the log scale where it is defined (a point on the
    edge, as the conformal quantile's own point is, counts as inside)."""
    return bool(abs(math.log(published / estimate)) <= halfwidth * (1 + 1e-12))


def _errors(points: Sequence[Point], pred: np.ndarray) -> dict[str, float]:
    y = np.array([p.latency_ms for p in points])
    rel = pred / y - 1
    return {"mean_abs_rel_error": float(np.abs(rel).mean()), "max_abs_rel_error": float(np.abs(rel).max()),
            "median_abs_rel_error": float(np.median(np.abs(rel)))}


def _bias_by(points: Sequence[Point], pred: np.ndarray, key: str) -> dict[str, dict[str, float]]:
    """Mean of published / predicted per group (geometric), and the number of points."""
    out: dict[str, dict[str, float]] = {}
    for g in sorted({getattr(p, key) for p in points}):
        r = [math.log(p.latency_ms / t) for p, t in zip(points, pred) if getattr(p, key) == g]
        out[g] = {"published_over_estimate": float(math.exp(np.mean(r))), "n": len(r)}
    return out


def validation_report(data: Mapping[str, Any], form: str = DEFAULT_FORM, chip: str = "A14",
                      level: float = LEVEL) -> dict[str, Any]:
    """Fit, validate and document the latency model of ``chip`` (see the module docstring).

    Returns a JSON-safe dict: ``forms`` (in-sample and leave-one-family-out errors of every
    candidate), ``model`` (the chosen form fitted on all points, its interval), ``points`` (each
    published point with its leave-one-family-out estimate and interval), ``coverage`` (in-sample
    and nested), ``source_bias``, ``family_bias`` and ``out_of_chip``.
    """
    points = calibration_points(data, "calibration", chip)
    if not points:
        raise ValueError(f"the calibration data hold no 'calibration' row for chip {chip!r}")
    forms = {}
    preds = {}
    for name in FORMS:
        m = fit_form(points, name, chip=chip)
        inside = np.array([_predict_for(m, p) for p in points])
        preds[name] = lofo(points, name, chip=chip)
        forms[name] = {"in_sample": _errors(points, inside), "lofo": _errors(points, preds[name]),
                       "balance": m.balance, "coefficients": m.coefficients, "overheads_ms": m.overheads_ms}
    model = fit_model(points, form, chip=chip, level=level)
    pred = preds[form]
    nested = nested_coverage(points, form, level=level)
    rows = []
    for p, t, ok in zip(points, pred, nested["inside"]):
        low, high = model.interval(t)
        rows.append({"model": p.name, "family": p.family, "source": p.source, "published_ms": p.latency_ms,
                     "lofo_estimate_ms": float(t), "low_ms": low, "high_ms": high,
                     "inside": _inside(p.latency_ms, t, model.halfwidth), "inside_nested": bool(ok)})
    out_rows = []
    for p in calibration_points(data, "out_of_chip", chip=None):
        t = model.predict(p.groups)
        low, high = model.interval(t)
        out_rows.append({"model": p.name, "family": p.family, "chip": p.chip, "source": p.source,
                         "published_ms": p.latency_ms, "estimate_ms": t, "low_ms": low, "high_ms": high,
                         "published_over_estimate": p.latency_ms / t, "inside": _inside(p.latency_ms, t, model.halfwidth)})
    by_chip = {}
    for c in sorted({r["chip"] for r in out_rows}):
        r = [math.log(x["published_over_estimate"]) for x in out_rows if x["chip"] == c]
        by_chip[c] = {"published_over_estimate": float(math.exp(np.mean(r))), "n": len(r),
                      "inside": sum(x["inside"] for x in out_rows if x["chip"] == c)}
    return {
        "provenance": {
            "what": "Latency model fitted on PUBLISHED latencies (results/latency_estimate/calibration.json) and validated "
                    "leave-one-family-out; every latency it produces is an ESTIMATE.",
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m ane_vit.latency fit --overwrite",
            "calibration_date_utc": data["provenance"]["date_utc"],
            "versions": {"python": platform.python_version(), "numpy": np.__version__},
            "chip": chip, "form": form, "level": level, "reference_source": REFERENCE_SOURCE,
            "interval": "split-conformal on |log(published / leave-one-family-out estimate)| over all calibration points: "
                        "[t exp(-h), t exp(h)] with h the ceil((n+1) level)-th smallest",
        },
        "forms": forms,
        "model": model.to_dict(),
        "points": rows,
        "coverage": {"level": level, "lofo_in_sample": float(np.mean([r["inside"] for r in rows])),
                     "nested": nested["coverage"], "nested_per_family": nested["per_family"],
                     "nested_halfwidths": nested["halfwidths"]},
        "source_bias": {"chosen": _bias_by(points, pred, "source"),
                        "without_source_effects": _bias_by(points, preds["roofline"], "source")},
        "family_bias": _bias_by(points, pred, "family"),
        "out_of_chip": {"rows": out_rows, "by_chip": by_chip},
    }


def write_calibrated_module(report: Mapping[str, Any], path: str | os.PathLike | None = None) -> Path:
    """Write the report's model to ``ane_vit/latency/calibrated.py`` (what ``estimate`` loads)."""
    path = Path(path) if path is not None else Path(__file__).with_name("calibrated.py")
    import pprint

    model = report["model"]
    text = (
        '"""The committed latency models, one per chip: written by ``python -m ane_vit.latency fit``.\n\n'
        "Do not edit by hand: refit from ``results/latency_estimate/calibration.json`` (the validation is in\n"
        '``results/latency_estimate/model.json``). Coefficients are ms per unit of each regressor."""\n\n'
        f"MODELS = {pprint.pformat({model['chip']: model}, width=100, sort_dicts=True)}\n"
    )
    path.write_text(text, encoding="utf-8")
    return path


def apply_estimates(model: LatencyModel, ours: Sequence[Mapping[str, Any]],
                    external: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Estimates of programs given as ``{"name", "implementation", "op_groups", "flags", ...}`` rows.

    ``ours`` are this project's programs (converted by the caller); ``external`` a parsed
    ``results/latency_estimate/external_programs.json``. ``flags`` are ``readiness_flags`` of each program. Every estimate has ``kind == "estimate"``.
    """
    from .estimate import estimate_groups

    rows = []
    for r in ours:
        e = estimate_groups(r["op_groups"], model, tuple(r.get("flags", ())))
        rows.append({k: v for k, v in r.items() if k != "op_groups"} | {"estimate": e.to_dict()})
    if external:
        for name, r in external["programs"].items():
            if "op_groups" not in r:
                rows.append({"name": name, "implementation": r.get("implementation"), "error": r.get("error")})
                continue
            e = estimate_groups(r["op_groups"], model, tuple(r.get("flags", ())))
            rows.append({"name": name, "implementation": r["implementation"], "arch": r.get("arch"),
                         "attention_mode": r.get("attention_mode"), "pe_type": r.get("pe_type"),
                         "input_shape": r["input_shape"], "summary": r["summary"],
                         "findings_by_rule": r.get("findings_by_rule", {}), "estimate": e.to_dict()})
    return {
        "provenance": {
            "what": "ESTIMATED Neural Engine latencies (kind: estimate) from ane_vit.latency; none was measured.",
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m ane_vit.latency apply --overwrite",
            "chip": model.chip, "form": model.form, "level": model.level, "source": model.reference_source,
            "external_programs": EXTERNAL_FILE if external else None,
        },
        "kinds": {"estimate": "computed by the latency model from the program; not a measurement"},
        "rows": rows,
    }

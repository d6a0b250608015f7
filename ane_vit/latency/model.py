"""Fitting and validating the latency model on published measurements (appendix A2).

The model prices each op of a converted program as the Neural Engine would spend time on it,
with a handful of non-negative coefficients fitted to published latencies of one chip:

    t = a * sum_compute max(FLOPs, r * bytes) + b * other_bytes + c * layout_bytes + d * ops + e_source

* the first term is a per-op roofline (in FLOP units): a conv or matmul takes as long as its
  arithmetic or its memory traffic (inputs and outputs padded to 64 bytes, weights), whichever
  is longer; ``r`` is the machine balance in FLOP per byte (chosen on a grid), ``1 / a`` the
  effective FLOP rate;
* elementwise/norm/activation ops and layout ops cost their traffic (``b``, ``c``), every op a
  fixed dispatch cost (``d``);
* ``e_source`` is a fixed overhead per measurement source (ModelBench, Xcode's performance
  report, coreml-performance): the tools time different things around the prediction.

Every coefficient is >= 0 (``scipy.optimize.nnls`` on rows scaled by ``1 / latency``, i.e. least
squares on the relative error). ``FORMS`` holds this and simpler candidates; ``lofo`` predicts
each family from a fit on the others (leave one family out), ``nested_coverage`` checks the
stated interval on families it never saw, and ``fit_model`` returns the ``LatencyModel`` that
``ane_vit.latency.estimate`` uses, with its interval calibrated by split-conformal on the
leave-one-family-out residuals. See ``notebooks/A2_latency_estimate.ipynb``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any

import numpy as np

from .features import features, summary_features

__all__ = [
    "FORMS",
    "BALANCE_GRID",
    "DEFAULT_FORM",
    "REFERENCE_SOURCE",
    "LEVEL",
    "SOURCE_LABELS",
    "Point",
    "LatencyModel",
    "design",
    "fit_form",
    "lofo",
    "conformal_halfwidth",
    "nested_coverage",
    "fit_model",
    "calibration_points",
]

#: Candidate model forms: which regressors enter, and whether each source gets its own overhead.
FORMS: dict[str, dict[str, Any]] = {
    "flops": {"columns": ("flops",), "sources": None},
    "flops+bytes": {"columns": ("flops", "activation_bytes_padded", "weight_bytes"), "sources": None},
    "flops+bytes+source": {"columns": ("flops", "activation_bytes_padded", "weight_bytes"), "sources": "offset"},
    "roofline": {"columns": ("roofline", "other_bytes", "layout_bytes", "ops"), "sources": None},
    "roofline+source": {"columns": ("roofline", "other_bytes", "layout_bytes", "ops"), "sources": "offset"},
    "roofline*source": {"columns": ("roofline", "other_bytes", "layout_bytes", "ops"), "sources": "scale"},
}
#: The form ``fit_model`` uses unless told otherwise (chosen in appendix A2 on leave-one-family-out error).
DEFAULT_FORM = "roofline+source"
#: Machine balances tried (FLOP per byte), log-spaced; the fit keeps the best on its own data.
BALANCE_GRID: tuple[float, ...] = tuple(float(v) for v in np.geomspace(4.0, 4096.0, 31))
#: The measurement source an estimate is stated for: Xcode's performance report (median), iOS 16.
REFERENCE_SOURCE = "xcode14_ios16"
#: What each measurement source is, for labels.
SOURCE_LABELS: dict[str, str] = {
    "xcode14_ios16": "Xcode 14's performance report (iOS 16, median)",
    "modelbench": "Apple's ModelBench app",
    "coreml_performance": "the coreml-performance tool",
    "xcode15_ios17": "Xcode 15's performance report (iOS 17, median)",
}
#: Coverage the stated interval aims at.
LEVEL = 0.8


@dataclass(frozen=True)
class Point:
    """One published latency with the program features of its model.

    Shapes: ``groups`` as returned by ``ane_vit.latency.op_groups``.
    """

    name: str
    family: str
    source: str
    chip: str
    latency_ms: float
    groups: tuple

    @cached_property
    def _arrays(self) -> dict[str, Any]:
        """The groups as numpy arrays, for ``_regressors`` at many balances (computed once)."""
        g = self.groups
        kind = np.array([x["kind"] for x in g])
        count = np.array([x["count"] for x in g], dtype=float)
        traffic = np.array([x["in_bytes"] + x["out_bytes"] for x in g], dtype=float)
        compute = kind == "compute"
        return {
            "c_count": count[compute],
            "c_flops": np.array([x["flops"] for x in g], dtype=float)[compute],
            "c_bytes": (traffic + np.array([x["weight_bytes"] for x in g], dtype=float))[compute],
            "fixed": {
                "other_bytes": float((count * traffic)[kind == "other"].sum()),
                "layout_bytes": float((count * np.array([x["out_bytes"] for x in g], dtype=float))[kind == "layout"].sum()),
                "ops": float(count.sum()),
            } | summary_features(g),
        }


def _point_regressors(p: Point, balance: float) -> dict[str, float]:
    """``_regressors(p.groups, balance)``, vectorised (the fit evaluates it at every grid balance)."""
    a = p._arrays
    roof = float((a["c_count"] * np.maximum(a["c_flops"], balance * a["c_bytes"])).sum())
    return {"roofline": roof} | a["fixed"]


def calibration_points(data: Mapping[str, Any], use: str = "calibration", chip: str | None = "A14") -> list[Point]:
    """The rows of a calibration file (``results/latency_estimate/calibration.json``) with their programs.

    Args:
        data: the parsed file.
        use: which rows: ``"calibration"`` or ``"out_of_chip"``.
        chip: keep only this chip (``None``: all).
    """
    rows = data.get("rows")
    programs = data.get("programs")
    if not isinstance(rows, list) or not isinstance(programs, dict):
        raise ValueError("expected a calibration file with a 'rows' list and a 'programs' mapping "
                         f"(results/latency_estimate/calibration.json), got keys {sorted(data)}")
    out = []
    for r in rows:
        if r["use"] != use or (chip is not None and r["chip"] != chip):
            continue
        if r["program"] not in programs:
            raise ValueError(f"row {r['model']!r} names program {r['program']!r}, which the file does not hold")
        out.append(Point(r["model"], r["family"], r["source_group"], r["chip"], float(r["published_ms"]),
                         tuple(programs[r["program"]]["op_groups"])))
    return out


def _regressors(groups: Sequence[Mapping[str, Any]], balance: float) -> dict[str, float]:
    return features(groups, balance) | summary_features(groups)


def design(points: Sequence[Point], form: str, balance: float, sources: Sequence[str]) -> np.ndarray:
    """The design matrix of ``form`` at ``balance``: one row per point, regressors then overheads.

    Overheads are one column per source (``sources``) when the form has source offsets, else one
    shared column of ones (a source scale multiplies the whole row: see ``fit_form``). Shapes: ``(len(points), len(columns) + len(sources) or 1)``.
    """
    spec = _form(form)
    rows = []
    for p in points:
        x = _point_regressors(p, balance)
        row = [x[c] for c in spec["columns"]]
        row += [float(p.source == s) for s in sources] if spec["sources"] == "offset" else [1.0]
        rows.append(row)
    return np.asarray(rows, dtype=float)


def _form(form: str) -> dict[str, Any]:
    if form not in FORMS:
        raise ValueError(f"unknown model form {form!r}; expected one of {sorted(FORMS)}")
    return FORMS[form]


def _nnls_relative(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares on the relative error: min sum ((a @ w - y) / y)^2, w >= 0."""
    from scipy.optimize import nnls

    scaled = a / y[:, None]
    norms = np.linalg.norm(scaled, axis=0)
    norms[norms == 0] = 1.0
    w, _ = nnls(scaled / norms, np.ones_like(y), maxiter=50 * a.shape[1])
    w = w / norms
    resid = (a @ w - y) / y
    return w, float(resid @ resid)


@dataclass(frozen=True)
class LatencyModel:
    """A fitted latency model for one chip: coefficients, balance, overheads and interval.

    ``coefficients`` are ms per unit of each regressor (``columns``); ``overheads_ms`` the fixed
    cost per measurement source (or ``{"all": ...}``); ``source_scales`` a factor per source that
    multiplies the whole estimate (empty: 1 for all). ``halfwidth`` is the interval's half-width
    on the log scale: the 80 % interval is ``[t * exp(-halfwidth), t * exp(halfwidth)]``.
    """

    form: str
    chip: str
    balance: float
    columns: tuple[str, ...]
    coefficients: dict[str, float]
    overheads_ms: dict[str, float]
    reference_source: str
    level: float = LEVEL
    halfwidth: float = float("nan")
    n_points: int = 0
    families: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)
    source_scales: dict[str, float] = field(default_factory=dict)

    def knows(self, source: str) -> bool:
        """Whether the fit holds an effect for measurement ``source`` (forms without source effects: all)."""
        return ("all" in self.overheads_ms or source in self.overheads_ms) and (not self.source_scales or source in self.source_scales)

    def scale(self, source: str | None = None) -> float:
        """The factor of ``source`` (default: the reference source); 1 for forms without scales."""
        if not self.source_scales:
            return 1.0
        source = source or self.reference_source
        if source not in self.source_scales:
            raise ValueError(f"no scale fitted for measurement source {source!r}; sources: {sorted(self.source_scales)}")
        return self.source_scales[source]

    def overhead(self, source: str | None = None) -> float:
        """The fixed overhead (ms) of ``source`` (default: the reference source)."""
        if "all" in self.overheads_ms:
            return self.overheads_ms["all"]
        source = source or self.reference_source
        if source not in self.overheads_ms:
            raise ValueError(f"no overhead fitted for measurement source {source!r}; sources: {sorted(self.overheads_ms)}")
        return self.overheads_ms[source]

    def terms(self, groups: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """The estimate split into its terms (ms), overhead of the reference source included."""
        x = _regressors(groups, self.balance)
        k = self.scale()
        out = {c: k * self.coefficients[c] * x[c] for c in self.columns}
        out["overhead"] = k * self.overhead()
        return out

    def predict(self, groups: Sequence[Mapping[str, Any]], source: str | None = None) -> float:
        """Estimated latency (ms) of a program (its ``op_groups``) as ``source`` would time it."""
        x = _regressors(groups, self.balance)
        return (sum(self.coefficients[c] * x[c] for c in self.columns) + self.overhead(source)) * self.scale(source)

    def interval(self, estimate_ms: float) -> tuple[float, float]:
        """The stated ``level`` interval around an estimate (ms)."""
        return estimate_ms * math.exp(-self.halfwidth), estimate_ms * math.exp(self.halfwidth)

    @property
    def effective_tflops(self) -> float:
        """The fitted rate of compute-bound ops in TFLOP/s, the inverse of the roofline coefficient (an estimate)."""
        a = self.coefficients.get("roofline", 0.0)
        return 1e-9 / a if a > 0 else float("inf")  # a is ms per FLOP: FLOP/ms * 1e3 / 1e12

    @property
    def effective_gbps(self) -> float:
        """The fitted bandwidth of memory-bound ops in GB/s, the effective rate over the balance (an estimate)."""
        return self.effective_tflops * 1e3 / self.balance  # TFLOP/s / (FLOP/B) = 1e12 B/s = 1e3 GB/s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["columns"] = list(self.columns)
        d["families"] = list(self.families)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyModel:
        needed = ("form", "chip", "balance", "columns", "coefficients", "overheads_ms", "reference_source", "halfwidth")
        missing = [k for k in needed if k not in d]
        if missing:
            raise ValueError(f"a latency model needs the fields {list(needed)}; missing {missing}")
        d = dict(d)
        d["columns"] = tuple(d["columns"])
        d["families"] = tuple(d.get("families", ()))
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown latency model fields {sorted(unknown)}")
        return cls(**d)


def fit_form(points: Sequence[Point], form: str, chip: str = "A14",
             balance_grid: Sequence[float] = BALANCE_GRID) -> LatencyModel:
    """Fit one form on ``points`` (non-negative, relative error), the balance chosen on the grid.

    The interval is not set here (``halfwidth`` NaN): see ``fit_model``.
    """
    if len(points) < 3:
        raise ValueError(f"need at least 3 published points to fit, got {len(points)}")
    spec = _form(form)
    y = np.array([p.latency_ms for p in points])
    srcs = sorted({p.source for p in points})
    reference = REFERENCE_SOURCE if (spec["sources"] is None or REFERENCE_SOURCE in srcs) else srcs[0]
    offsets = srcs if spec["sources"] == "offset" else []
    uses_balance = "roofline" in spec["columns"]
    best = None
    for r in balance_grid if uses_balance else balance_grid[:1]:
        a = design(points, form, r, offsets)
        if spec["sources"] == "scale":
            w, loss, scales = _fit_scaled(a, y, [p.source for p in points], reference)
        else:
            (w, loss), scales = _nnls_relative(a, y), {}
        if best is None or loss < best[2] - 1e-12:
            best = (r, w, loss, scales)
    r, w, _, scales = best
    k = len(spec["columns"])
    coefficients = {c: float(v) for c, v in zip(spec["columns"], w[:k])}
    overheads = {s: float(v) for s, v in zip(offsets, w[k:])} if offsets else {"all": float(w[k])}
    return LatencyModel(form, chip, float(r), tuple(spec["columns"]), coefficients, overheads, reference,
                        n_points=len(points), families=tuple(sorted({p.family for p in points})), source_scales=scales)


def _fit_scaled(a: np.ndarray, y: np.ndarray, sources: Sequence[str], reference: str,
                rounds: int = 50) -> tuple[np.ndarray, float, dict[str, float]]:
    """``y = scale[source] * (a @ w)``, w >= 0, the reference source's scale 1: alternate the two.

    For fixed scales the weights are ``_nnls_relative`` on ``y / scale``; for fixed weights each
    scale is the geometric mean of ``y / (a @ w)`` over its source (least squares in log space).
    """
    src = np.array(sources)
    names = sorted(set(sources))
    scale = dict.fromkeys(names, 1.0)
    for _ in range(rounds):
        s = np.array([scale[x] for x in src])
        w, _ = _nnls_relative(a, y / s)
        base = a @ w
        new = {n: float(np.exp(np.mean(np.log(y[src == n] / base[src == n])))) for n in names}
        ref = new[reference]
        new = {n: v / ref for n, v in new.items()}
        done = max(abs(new[n] / scale[n] - 1) for n in names) < 1e-10
        scale = new
        if done:
            break
    s = np.array([scale[x] for x in src])
    w, _ = _nnls_relative(a, y / s)
    resid = (s * (a @ w) - y) / y
    return w, float(resid @ resid), scale


def lofo(points: Sequence[Point], form: str, **kw) -> np.ndarray:
    """Leave-one-family-out predictions: each point predicted by a fit without its family.

    The held-out point is predicted for its own measurement source (a source effect is fitted
    from the other families of that source; the reference source's when none is left). Shapes: ``(len(points),)``, in ms.
    """
    pred = np.empty(len(points))
    for fam in sorted({p.family for p in points}):
        train = [p for p in points if p.family != fam]
        model = fit_form(train, form, **kw)
        for i, p in enumerate(points):
            if p.family == fam:
                pred[i] = _predict_for(model, p)
    return pred


def _predict_for(model: LatencyModel, p: Point) -> float:
    """``model``'s prediction for ``p``'s own source, or for the reference source when the fit
    has no overhead for it (all families of that source held out)."""
    return model.predict(p.groups, p.source if model.knows(p.source) else None)


def conformal_halfwidth(log_errors: Sequence[float], level: float = LEVEL) -> float:
    """Split-conformal half-width on the log scale: the ``ceil((n + 1) level)``-th smallest absolute error.

    With ``n`` exchangeable scores this covers a new point with probability >= ``level``; with
    fewer than ``1 / (1 - level) - 1`` scores no finite width does, and ``inf`` is returned.
    """
    s = np.sort(np.abs(np.asarray(log_errors, dtype=float)))
    k = math.ceil((len(s) + 1) * level)
    return float(s[k - 1]) if k <= len(s) else float("inf")


def nested_coverage(points: Sequence[Point], form: str, level: float = LEVEL, **kw) -> dict[str, Any]:
    """Does the stated interval cover families it never saw? Leave one family out, twice.

    For each family F: the interval's half-width is calibrated (``conformal_halfwidth``) on the
    leave-one-family-out errors of the other families only (each of their fits also without F),
    and F is predicted by a fit on all the other families. Returns the share of F's points
    inside their intervals over all families (``coverage``), per family, and the widths used.
    """
    families = sorted({p.family for p in points})
    inside = np.zeros(len(points), dtype=bool)
    widths: dict[str, float] = {}
    for fam in families:
        rest = [p for p in points if p.family != fam]
        inner = lofo(rest, form, **kw)
        err = np.log(np.array([p.latency_ms for p in rest]) / inner)
        q = conformal_halfwidth(err, level)
        widths[fam] = q
        model = fit_form(rest, form, **kw)
        for i, p in enumerate(points):
            if p.family == fam:
                t = _predict_for(model, p)
                inside[i] = abs(math.log(p.latency_ms / t)) <= q
    per_family = {f: float(np.mean([inside[i] for i, p in enumerate(points) if p.family == f])) for f in families}
    return {"coverage": float(inside.mean()), "per_family": per_family, "halfwidths": widths,
            "inside": inside.tolist(), "level": level}


def fit_model(points: Sequence[Point], form: str = DEFAULT_FORM, chip: str = "A14", level: float = LEVEL,
              **kw) -> LatencyModel:
    """Fit ``form`` on every point and set its interval from the leave-one-family-out errors.

    The half-width is ``conformal_halfwidth`` of ``log(published / LOFO prediction)`` over all
    points; ``notes`` records the LOFO errors (mean and worst absolute relative error).
    """
    model = fit_form(points, form, chip=chip, **kw)
    pred = lofo(points, form, chip=chip, **kw)
    y = np.array([p.latency_ms for p in points])
    err = np.log(y / pred)
    q = conformal_halfwidth(err, level)
    rel = np.abs(pred / y - 1)
    notes = {"lofo_mean_abs_rel_error": float(rel.mean()), "lofo_max_abs_rel_error": float(rel.max()),
             "lofo_in_interval": float(np.mean(np.abs(err) <= q))}
    return LatencyModel(**{**asdict(model), "columns": model.columns, "families": model.families,
                           "level": level, "halfwidth": q, "notes": notes})

"""The benchmark's results format: the ``kind`` of every number, the JSON files and the
markdown table; the public names are re-exported by ``ane_vit.bench``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

SCHEMA_VERSION = 1

# What each ``kind`` label on a number means (no kind here is a Neural Engine latency);
# public, with its documentation, as ``ane_vit.bench.KINDS``.
KINDS: dict[str, str] = {
    "measured_cpu": "timed on this machine's CPU (PyTorch latency, export wall time); not the Neural Engine",
    "program_fact": "a count or size of the model, its converted program or its file on disk; not a latency",
    "derived": "computed from other numbers: ratios, PSNR of the interpreted program against PyTorch",
}


def _metric(value, unit: str, kind: str) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    return {"value": value, "unit": unit, "kind": kind}


def _value(row: dict, metric: str):
    entry = row["metrics"].get(metric)
    return None if entry is None else entry["value"]


def save_results(results: dict, path: str | os.PathLike) -> Path:
    """Write a results dict as indented JSON (non-finite floats as strings); return the path."""

    def clean(obj):
        if isinstance(obj, float) and not math.isfinite(obj):
            return str(obj)  # "inf": JSON has no infinity
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(results), indent=1) + "\n")
    return path


def load_results(path: str | os.PathLike) -> dict:
    """Read a benchmark JSON, checking its shape; raise ``ValueError`` saying what is missing."""
    data = json.loads(Path(path).read_text())
    missing = [k for k in ("provenance", "results") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a benchmark results file; expected keys 'provenance' and 'results', missing {missing}")
    for row in data["results"]:
        for name, entry in row.get("metrics", {}).items():
            if entry.get("kind") not in KINDS:
                raise ValueError(f"{path}: metric {name!r} of {row.get('name')!r} has kind {entry.get('kind')!r}; expected one of {sorted(KINDS)}")
    data.setdefault("comparisons", [])
    return data


def _as_results(results) -> dict:
    return load_results(results) if isinstance(results, (str, os.PathLike)) else results


# Two tables, so that each fits the book's column (model names on one line). A column:
# header, metric, divisor, format, and a companion metric shown with it in the same unit:
# ("range", lower bound) prints "lower-upper", ("brackets", other) "value (other)". MB = 10^6 B.
_PROGRAM_COLUMNS = [
    ("ops", "op_count", 1.0, "{:.0f}", None),
    ("layout ops (width)", "layout_op_count", 1.0, "{:.0f}", ("brackets", "layout_ops_moving_width")),
    ("width MB", "layout_bytes_moving_width_padded", 1e6, "{:.2f}", ("range", "layout_bytes_moving_width_padded_lower")),
    ("activation MB", "activation_bytes_padded", 1e6, "{:.1f}", ("range", "activation_bytes_padded_lower")),
    ("rank", "max_rank", 1.0, "{:.0f}", None),
    ("findings", "findings_total", 1.0, "{:.0f}", None),
]
_RUN_COLUMNS = [
    ("weights MB", "weight_bytes", 1e6, "{:.2f}", None),
    ("package MB", "mlpackage_bytes", 1e6, "{:.2f}", None),
    ("parity dB", "parity_psnr_db", 1.0, "{:.1f}", None),
    ("export s", "export_time_s", 1.0, "{:.1f}", None),
    ("CPU ms median (p90)", "cpu_latency_median_ms", 1.0, "{:.1f}", ("brackets", "cpu_latency_p90_ms")),
]
#: Which columns ``comparison_table`` prints: the program's contents, or its files, parity and timings.
TABLES = {"program": _PROGRAM_COLUMNS, "run": _RUN_COLUMNS}


def _cell(row: dict, metric: str, scale: float, fmt: str) -> str:
    value = _value(row, metric)
    if isinstance(value, str):
        value = float(value)  # "inf" as saved
    return "-" if value is None else fmt.format(value / scale)


def _column(row: dict, metric: str, scale: float, fmt: str, companion) -> str:
    text = _cell(row, metric, scale, fmt)
    if companion is None or text == "-":
        return text
    style, other = companion
    other_text = _cell(row, other, scale, fmt)  # same unit and format as the column's own metric
    if other_text == "-":
        return text
    return f"{other_text}-{text}" if style == "range" else f"{text} ({other_text})"


def _table(results: dict, columns: list) -> str:
    header = ["model", "impl.", *(c[0] for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(columns)) + "|"]
    for row in results["results"]:
        cells = [row["pair"].replace("_", " "), row["implementation"]]
        cells += [_column(row, metric, scale, fmt, companion) for _, metric, scale, fmt, companion in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(results: dict | str | os.PathLike, table: str = "both") -> str:
    """Markdown, one line per program, of the numbers the benchmark recorded.

    ``table="program"``: what the program contains: ops, layout ops (those that move the
    last, width, axis in brackets), the bytes the width-moving layout ops write ("width MB")
    and the activation bytes, each padded to 64-byte rows as ``lower-upper`` (lower bound:
    only the program's outputs padded; upper: every op output padded), max rank, findings.
    ``table="run"``: weights and package size, program parity, export time and the CPU
    latency (median, p90 in brackets). ``"both"`` (default): the two, a blank line apart.
    Sizes in MB = 10^6 bytes. Each table stays narrow enough for the book's column.
    """
    if table not in (*TABLES, "both"):
        raise ValueError(f"table must be one of {[*TABLES, 'both']}, got {table!r}")
    results = _as_results(results)
    if table == "both":
        return _table(results, _PROGRAM_COLUMNS) + "\n\n" + _table(results, _RUN_COLUMNS)
    return _table(results, TABLES[table])


# Program facts that identify a model's program: a timed row is joined to a recomputed row
# only when all of these that both have are equal (same architecture, weights and layout).
_SAME_PROGRAM = (
    "parameters", "op_count", "layout_op_count", "layout_bytes", "activation_bytes_dense",
    "activation_bytes_padded", "weight_bytes", "flops", "max_rank",
)


def merge_timings(facts: dict | str | os.PathLike, timed: dict | str | os.PathLike) -> dict:
    """Program facts of a new run, with the CPU timings of an earlier run where the program
    did not change.

    ``facts``: a run made with ``timing=False`` (nothing timed); ``timed``: an earlier
    results file with its timings. A row of ``facts`` takes the ``measured_cpu`` metrics
    (latency, export time) and ``latency_settings`` of the ``timed`` row of the same name
    when every program fact that identifies the program (``_SAME_PROGRAM``) is equal in
    both; otherwise its timings are dropped (they belong to another program), and the row is
    listed in ``provenance["timings_dropped"]``. The result keeps the timed run's
    provenance (machine, date and settings of the timings) with the new run's under
    ``provenance["program_facts"]``, and recomputes the latency ratios.

    Raises:
        ValueError: if ``facts`` holds a timing, or ``timed`` none.
    """
    import copy

    facts, timed = copy.deepcopy(_as_results(facts)), _as_results(timed)
    if any(m.get("kind") == "measured_cpu" for row in facts["results"] for m in row["metrics"].values()):
        raise ValueError("facts must come from a run without timing (timing=False / --no-timing); it holds measured_cpu metrics")
    if not any(m.get("kind") == "measured_cpu" for row in timed["results"] for m in row["metrics"].values()):
        raise ValueError("timed holds no measured_cpu metric: nothing to merge")
    by_name = {row["name"]: row for row in timed["results"]}
    dropped = []
    for row in facts["results"]:
        old = by_name.get(row["name"])
        same = old is not None and all(
            _value(row, k) == _value(old, k) for k in _SAME_PROGRAM if k in row["metrics"] and k in old["metrics"]
        )
        if not same:
            dropped.append(row["name"])
            continue
        row["metrics"].update({k: v for k, v in old["metrics"].items() if v["kind"] == "measured_cpu"})
        if "latency_settings" in old:
            row["latency_settings"] = old["latency_settings"]
    rows = {row["name"]: row for row in facts["results"]}
    for comp in facts.get("comparisons", []):
        ane, ref = rows.get(comp["ane"]), rows.get(comp["reference"])
        for metric in ("cpu_latency_median_ms", "export_time_s"):
            comp["metrics"].pop(f"{metric}_ane_over_reference", None)  # only from the timings kept below
            a, r = (None, None) if ane is None or ref is None else (_value(ane, metric), _value(ref, metric))
            if a is not None and r:
                comp["metrics"][f"{metric}_ane_over_reference"] = _metric(a / r, "ratio", "derived")
    provenance = copy.deepcopy(timed["provenance"])
    provenance["program_facts"] = {k: facts["provenance"].get(k) for k in ("date_utc", "command", "versions", "machine", "settings")}
    provenance["timings_dropped"] = dropped
    provenance["note"] = (
        "Timings (measured_cpu) from the run this provenance describes; program facts and derived numbers "
        "recomputed as program_facts says. Rows in timings_dropped have no timing: their program changed."
    )
    return {"provenance": provenance, "results": facts["results"], "comparisons": facts.get("comparisons", [])}

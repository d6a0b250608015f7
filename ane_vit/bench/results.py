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


_TABLE_COLUMNS = [  # header, metric, scale, format
    ("export s", "export_time_s", 1.0, "{:.1f}"),
    ("package MB", "mlpackage_bytes", 1e6, "{:.2f}"),
    ("ops", "op_count", 1.0, "{:.0f}"),
    ("layout ops", "layout_op_count", 1.0, "{:.0f}"),
    ("layout MiB (dense)", "layout_bytes", 2.0**20, "{:.2f}"),
    ("padded act. MiB", "activation_bytes_padded", 2.0**20, "{:.1f}"),
    ("weights MiB", "weight_bytes", 2.0**20, "{:.2f}"),
    ("findings", "findings_total", 1.0, "{:.0f}"),
    ("parity dB", "parity_psnr_db", 1.0, "{:.1f}"),
    ("CPU ms median (p90)", "cpu_latency_median_ms", 1.0, "{:.1f}"),
]
_P90_OF = {"cpu_latency_median_ms": "cpu_latency_p90_ms"}  # shown in brackets after the median


def _cell(row: dict, metric: str, scale: float, fmt: str) -> str:
    value = _value(row, metric)
    if isinstance(value, str):
        value = float(value)  # "inf" as saved
    return "-" if value is None else fmt.format(value / scale)


def comparison_table(results: dict | str | os.PathLike) -> str:
    """A markdown table, one line per program, of the numbers the benchmark recorded.

    Narrow enough for the book's column: model names break at spaces, and the CPU p90
    shares a cell with the median."""
    results = _as_results(results)
    header = ["model", "impl.", *(c[0] for c in _TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(_TABLE_COLUMNS)) + "|"]
    for row in results["results"]:
        cells = [row["pair"].replace("_", " "), row["implementation"]]
        for _, metric, scale, fmt in _TABLE_COLUMNS:
            text = _cell(row, metric, scale, fmt)
            if metric in _P90_OF and text != "-":
                text += f" ({_cell(row, _P90_OF[metric], scale, fmt)})"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

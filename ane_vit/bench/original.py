"""The original repository's programs as a third column next to the reference and ours.

Apple's ml-vision-transformers-ane (the original, cited as ``apple2023mlvitane``) ships the
MOAT models this project re-creates. Its programs were converted and counted once, with the
same settings as ours (``ane_vit.export.to_mlprogram``: float16 ML Program, iOS16, fixed
input shape, eval mode, non-trivial weights) and read with ``ane_vit.analysis.analyze``;
the numbers live in ``results/original_programs.json`` with their provenance (repository,
commit, date, versions, conversion settings, how the weights were set). They are recorded
data: this project neither contains nor runs the original's code. The reference and our
(ANE) programs are computed live by ``run_benchmark`` or read from a benchmark file.

* ``load_original`` reads and checks that file (every number labelled with a ``kind``,
  none a latency; the provenance complete).
* ``original_specs`` gives the benchmark pairs that rebuild the recorded configurations
  with our code; ``join_original`` matches benchmark rows to recorded rows.
* ``original_comparison_table`` is the markdown table reference | original | ours, one
  line per configuration and metric; ``plot_metric(..., original=...)`` and
  ``plot_bench(..., original=...)`` draw the original as a third, hatched bar.

See ``notebooks/06_export_and_inspection.ipynb`` ("The original, measured").
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..moat import _CHANNEL_ALIGN
from .results import KINDS, _as_results, _value
from .specs import BenchSpec

__all__ = [
    "ORIGINAL_FILE",
    "original_programs_path",
    "load_original",
    "original_specs",
    "join_original",
    "original_comparison_table",
    "original_note",
]

#: File name of the original's recorded programs, in the repository's ``results/`` folder.
ORIGINAL_FILE = "original_programs.json"

_PROVENANCE_FIELDS = ("repository", "commit", "citation", "date_utc", "versions", "conversion", "weights")
_VERSION_FIELDS = ("python", "torch", "coremltools", "numpy", "ane_vit")
_ROW_FIELDS = ("name", "arch", "input_shape", "attention_mode", "pe_type", "stem_size", "hidden_size", "window_size", "metrics")
_METRIC_FIELDS = ("value", "unit", "kind")
_MATCH_FIELDS = ("arch", "input_shape", "attention_mode", "pe_type", "stem_size", "hidden_size", "window_size")

# header, metric, divisor, format, lower bound: what the three-column table shows (MB = 10^6
# bytes). A metric with a lower bound prints "lower-upper": padded to 64-byte rows, the lower
# bound pads only the program's outputs, the upper every op output.
_TABLE_METRICS = [
    ("ops", "op_count", 1.0, "{:.0f}", None),
    ("layout ops", "layout_op_count", 1.0, "{:.0f}", None),
    ("layout ops moving the width", "layout_ops_moving_width", 1.0, "{:.0f}", None),
    ("width-moving layout MB", "layout_bytes_moving_width_padded", 1e6, "{:.2f}", "layout_bytes_moving_width_padded_lower"),
    ("layout MB", "layout_bytes_padded", 1e6, "{:.2f}", "layout_bytes_padded_lower"),
    ("padded activation MB", "activation_bytes_padded", 1e6, "{:.1f}", "activation_bytes_padded_lower"),
    ("parameters", "parameters", 1.0, "{:,.0f}", None),
    ("findings", "findings_total", 1.0, "{:.0f}", None),
]
_REQUIRED_METRICS = [m for _, metric, _, _, lower in _TABLE_METRICS for m in (metric, lower) if m]


def original_programs_path() -> Path:
    """``results/original_programs.json`` of the repository this package sits in."""
    return Path(__file__).resolve().parents[2] / "results" / ORIGINAL_FILE


def _require(mapping, fields, where: str, path) -> None:
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: {where} must be a JSON object, got {type(mapping).__name__}")
    for name in fields:
        if name not in mapping:
            raise ValueError(f"{path}: {where} has no field {name!r}; expected fields {list(fields)}")


def _check_original(data, path) -> dict:
    _require(data, ("provenance", "results"), "the file", path)
    prov = data["provenance"]
    _require(prov, _PROVENANCE_FIELDS, "provenance", path)
    _require(prov["versions"], _VERSION_FIELDS, "provenance.versions", path)
    if not re.fullmatch(r"[0-9a-f]{40}", str(prov["commit"])):
        raise ValueError(f"{path}: provenance.commit must be a 40-hex-digit git commit, got {prov['commit']!r}")
    if not isinstance(data["results"], list) or not data["results"]:
        raise ValueError(f"{path}: results must be a non-empty list of programs, got {data['results']!r:.60}")
    for i, row in enumerate(data["results"]):
        _require(row, _ROW_FIELDS, f"results[{i}]", path)
        for name, entry in row["metrics"].items():
            where = f"results[{i}] ({row['name']}) metric {name!r}"
            _require(entry, _METRIC_FIELDS, where, path)
            if entry["kind"] not in KINDS or entry["kind"] == "measured_cpu":
                allowed = sorted(k for k in KINDS if k != "measured_cpu")
                raise ValueError(f"{path}: {where} has kind {entry['kind']!r}; expected one of {allowed} (no latency is recorded for the original)")
        missing = [m for m in _REQUIRED_METRICS if m not in row["metrics"]]
        if missing:
            raise ValueError(f"{path}: results[{i}] ({row['name']}) lacks the metrics {missing}")
    return data


def load_original(path: str | os.PathLike | None = None) -> dict:
    """Read the original repository's recorded programs and check the file.

    Args:
        path: a JSON file; default ``original_programs_path()``.

    Returns:
        ``{"provenance": {...}, "results": [row, ...]}``; each row names its configuration
        (``arch``, ``input_shape``, ``attention_mode``, ``pe_type``, ``stem_size``,
        ``hidden_size``, ``window_size``) and its ``metrics`` in the benchmark's format.

    Raises:
        FileNotFoundError: naming the path, when there is no such file.
        ValueError: naming the path and the missing field or wrong ``kind``.
    """
    path = Path(path) if path is not None else original_programs_path()
    if not path.is_file():
        raise FileNotFoundError(f"no recorded programs of the original at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return _check_original(data, path)


def _as_original(original) -> dict:
    if original is None or isinstance(original, (str, os.PathLike)):
        return load_original(original)
    return _check_original(original, "<original dict>")


def original_specs(original: dict | str | os.PathLike | None = None, archs=None, seed: int = 0) -> list[BenchSpec]:
    """Benchmark pairs (reference, ours) that rebuild the recorded configurations with our
    code and random weights (``randomize_(seed)``), in the file's order; ``archs``
    keeps only those architectures (e.g. ``["tiny-moat-0"]``)."""
    original = _as_original(original)
    specs = []
    for row in original["results"]:
        if archs is not None and row["arch"] not in archs:
            continue
        size = row["input_shape"][-1]
        if row["input_shape"][-2] != size:
            raise ValueError(f"{row['name']}: BenchSpec builds square inputs, got {row['input_shape']}")
        # ours aligns widths to 32 channels by default; keep the recorded widths where that would change them
        align = all(c % _CHANNEL_ALIGN == 0 for c in [*row["stem_size"], *row["hidden_size"]])
        pair = f"{row['arch']}_{size}_{row['attention_mode']}_{row['pe_type']}" + ("" if align else "_unaligned")
        for impl in ("reference", "ane"):
            specs.append(BenchSpec(
                f"{pair}_{impl}", "moat", impl, row["arch"], size, row["attention_mode"], row["pe_type"],
                seed=seed, weights="random", channel_buffer_align=align,
            ))
    return specs


def _matches(row: dict, recorded: dict) -> bool:
    return all(field in row and json.dumps(row[field]) == json.dumps(recorded[field]) for field in _MATCH_FIELDS)


def join_original(results: dict | str | os.PathLike, original: dict | str | os.PathLike | None = None) -> list[dict]:
    """Match each pair of a benchmark's results to the original's recorded program.

    A recorded program matches when architecture, input shape, attention mode, position
    encoding, channel widths and windows are all equal (rows of benchmark files without
    widths match nothing). Returns one dict per pair, in the results' order:
    ``{"pair", "reference", "ours", "original"}``, each a row or ``None``.
    """
    results, original = _as_results(results), _as_original(original)
    pairs: dict[str, dict] = {}
    for row in results["results"]:
        entry = pairs.setdefault(row["pair"], {"pair": row["pair"], "reference": None, "ours": None, "original": None})
        entry["ours" if row["implementation"] == "ane" else "reference"] = row
    for entry in pairs.values():
        ours = entry["ours"] or entry["reference"]
        found = [rec for rec in original["results"] if ours is not None and _matches(ours, rec)]
        entry["original"] = found[0] if found else None
    return list(pairs.values())


def _label(entry: dict) -> str:
    row = entry["ours"] or entry["reference"]
    if row is None or "arch" not in row:
        return entry["pair"]
    shape = row["input_shape"]
    window = "" if row["attention_mode"] == "global" or not row.get("window_size") else " " + "x".join(map(str, row["window_size"][-1]))
    align = " (unaligned)" if row.get("channel_buffer_align") is False else ""
    return f"{row['arch']} {shape[-2]}x{shape[-1]} {row['attention_mode']}{window} {row['pe_type']}{align}"


def original_comparison_table(
    results: dict | str | os.PathLike,
    original: dict | str | os.PathLike | None = None,
    only_matched: bool = True,
) -> str:
    """Markdown table, reference | original | ours side by side: one line per configuration
    and metric (ops, layout ops, those that move the last axis, the bytes they write, all
    layout bytes, activation bytes, parameters, findings). Bytes are padded to 64-byte rows
    and shown as ``lower-upper``: the lower bound pads only the program's outputs, the upper
    every op output; MB = 10^6 bytes. The original's column is recorded data
    (``load_original``); the others come from ``results``. ``only_matched=False`` keeps the
    pairs that have no recorded original (shown as ``-``).
    """
    original = _as_original(original)
    short = original["provenance"]["commit"][:7]
    lines = [
        f"| configuration | metric | reference | original ({short}) | ours |",
        "|---|---|---:|---:|---:|",
    ]
    for entry in join_original(results, original):
        if only_matched and entry["original"] is None:
            continue
        label = _label(entry)
        for i, (header, metric, scale, fmt, lower) in enumerate(_TABLE_METRICS):
            cells = []
            for key in ("reference", "original", "ours"):
                value = None if entry[key] is None else _value(entry[key], metric)
                low = None if entry[key] is None or lower is None else _value(entry[key], lower)
                text = "-" if value is None else fmt.format(value / scale)
                cells.append(text if low is None or value is None else f"{fmt.format(low / scale)}-{text}")
            lines.append(f"| {label if i == 0 else ''} | {header} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _original_values(results: dict, original: dict, metric: str, pairs: list[str]) -> list:
    """The original's value of ``metric`` for each pair in ``pairs`` (``None``: not recorded)."""
    by_pair = {e["pair"]: e["original"] for e in join_original(results, original)}
    return [None if by_pair.get(p) is None else _value(by_pair[p], metric) for p in pairs]


def _legend_label(original: dict) -> str:
    prov = original["provenance"]
    return f"original (recorded, {prov['commit'][:7]})"


def original_note(original: dict) -> str:
    """One sentence saying where the original's numbers come from, for notes under charts."""
    prov = original["provenance"]
    conv, v = prov["conversion"], prov["versions"]
    return (
        f"Original: {prov['repository']} at commit {prov['commit'][:7]}, converted and counted on "
        f"{prov['date_utc'][:10]} ({conv.get('compute_precision', '?')}, {conv.get('minimum_deployment_target', '?')}, "
        f"coremltools {v['coremltools']}, torch {v['torch']}); recorded program facts, not latency."
    )

"""Build, export and compare the ANE and reference models side by side.

``python -m ane_vit.bench`` builds each model twice - the ANE layout and its plain
reference twin, with the same random, trained-looking weights (``randomize_``, ported) -
exports both to Core ML ML Programs and
records, for every program: export time, ``.mlpackage`` size, op count, layout ops and the
bytes they move (also split off: those that move the last, width, axis), activation bytes
with the last axis padded to 64 bytes as a lower bound (only the program's outputs padded)
and an upper bound (every op output padded), weight bytes, readiness findings by rule,
program parity (the numpy interpreter of the program against PyTorch fp32) and the PyTorch
CPU latency. ``--no-timing`` records the program facts alone, and ``--keep-timings-from``
joins them to the timings of an earlier file where the program did not change
(``merge_timings``). The results go to ``results/<name>.json`` with
their provenance, and a chart next to it; the book draws its comparison plots from that file.

Every number carries a ``kind`` (see ``KINDS``): ``measured_cpu`` (timed on this machine's
CPU), ``program_fact`` (a count or size of the model, its program or its file) or
``derived`` (computed from other numbers: ratios, PSNR). This module never produces a
Neural Engine latency: that is only ever measured on a device (``ane_vit.device``) or
quoted from a cited source. See ``notebooks/06_export_and_inspection.ipynb``.

Shapes: MOAT ``x: (1, 3, 256, 256) -> 4 NCHW stage maps``; DeiT ``x: (1, 3, 224, 224) ->
(1, 1000)``.

The original repository's programs (apple/ml-vision-transformers-ane), converted and
counted once with the same settings, are recorded in ``results/original_programs.json``;
``load_original``, ``original_comparison_table`` and ``plot_bench(..., original=...)`` put
them next to the reference and ours (``python -m ane_vit.bench --with-original``).

``compare_local_routes`` converts the routes of local attention (the seed's channels-last
route, the default; windows along axis 2; windows on the batch axis at rank 4, as in Apple's
SAM3 code) and records their width-aware program facts
(``python -m ane_vit.bench --local-routes`` -> ``results/local_routes.json``, chapter 5).
"""

# The code lives in private modules, one concept each; this module is the public face
# (the names below):
#   specs    BenchSpec and default_specs: what is compared
#   run      run_benchmark: build, export, analyse, check and time each model
#   measure  cpu_latency(_interleaved) and provenance: measuring on this machine
#   results  KINDS, save_results, load_results, comparison_table, merge_timings: the results format
#   plots    PLOT_METRICS, plot_metric, plot_bench: the chart
#   original the original repository's recorded programs as a third column
#   routes   the local-attention routes compared on their programs (results/local_routes.json)
#   cli      main: the command line (python -m ane_vit.bench, run by __main__.py)

from __future__ import annotations

from . import plots as _plots
from . import results as _results
from .cli import main
from .measure import cpu_latency, cpu_latency_interleaved, provenance
from .original import (
    join_original,
    load_original,
    original_comparison_table,
    original_note,
    original_programs_path,
    original_specs,
)
from .plots import plot_bench, plot_metric
from .results import SCHEMA_VERSION as SCHEMA_VERSION
from .results import TABLES as TABLES
from .results import comparison_table, load_results, merge_timings, save_results
from .routes import (
    LOCAL_ROUTES,
    BatchWindowsRank4Block,
    compare_local_routes,
    local_routes_table,
    route_model,
)
from .run import _outputs as _outputs  # used by the tests
from .run import run_benchmark
from .specs import BenchSpec, default_specs
from .specs import Builder as Builder

__all__ = [
    "KINDS",
    "PLOT_METRICS",
    "BenchSpec",
    "default_specs",
    "cpu_latency",
    "cpu_latency_interleaved",
    "provenance",
    "run_benchmark",
    "save_results",
    "load_results",
    "comparison_table",
    "merge_timings",
    "plot_metric",
    "plot_bench",
    "original_programs_path",
    "load_original",
    "original_specs",
    "join_original",
    "original_comparison_table",
    "original_note",
    "LOCAL_ROUTES",
    "BatchWindowsRank4Block",
    "route_model",
    "compare_local_routes",
    "local_routes_table",
    "main",
]

# Bound here, not only imported: the API page reads these ``#:`` comments from this file.
#: What each ``kind`` label on a number means. No kind here is a Neural Engine latency.
KINDS: dict[str, str] = _results.KINDS

#: Metrics the chart draws, key -> (what it is, axis label with unit, divisor of the stored value).
PLOT_METRICS: dict[str, tuple[str, str, float]] = _plots.PLOT_METRICS

"""Apple's Core AI stack for ane_vit's models: export to ``.aimodel``, run, summarise, compare.

The 2026 deployment route, next to the Core ML one of ``ane_vit.export``:
``torch.export`` -> ``coreai-torch`` (converter) -> ``.aimodel`` -> Core AI runtime, with
``coreai-opt`` for float16 and compression. Everything here runs on a Linux CPU where the
``coreai-core`` wheel installs (CPython >= 3.11 on Linux x86-64 with glibc >= 2.34, or macOS
26+ on Apple silicon); elsewhere ``import ane_vit.coreai`` still works and each function
raises ``CoreAIUnavailableError`` saying where Core AI installs. Only ``mac`` needs a Mac.

* ``stack``: is Core AI usable here (``coreai_status``, ``require_coreai``), the pinned versions;
* ``convert``: ``to_exported_program``, ``to_aiprogram`` (in memory, float32 or float16);
* ``save``: ``export_model``, ``export_moat``, ``save_aiprogram`` (atomic, with provenance in
  the ``.aimodel``'s metadata), ``read_aimodel_metadata``;
* ``paths``: ``resolve_aimodel_target``, ``check_aimodel``, ``aimodel_nbytes``, file names;
* ``runtime``: ``AIModelRunner`` and ``run_aimodel``: Apple's runtime behind plain
  synchronous calls (also inside Jupyter's running event loop);
* ``summary``: ``summarize`` -> ``AIProgramReport`` (ops by type, ranks, dtypes, constants, size);
* ``compare``: ``three_runtimes`` (PyTorch vs Core ML program interpreted vs Core AI program)
  and the study behind ``results/coreai_three_runtimes.json``; ``matmul_accumulation_probe``
  and ``float16_op_survey``, how each float16 runtime computes single ops
  (``results/coreai_float16_ops.json``);
* ``accuracy``: ``digits_accuracy`` (-> ``results/coreai_digits_accuracy.json``);
* ``mac``: compute units, compute plan, ahead-of-time compile (macOS 27+ / Xcode 27+ only);
* ``quiet``: the stack's routine chatter kept out of our output;
* ``optimize``: coreai-opt compression of the digits model (palettization, int8 weights,
  W8A8 with calibration) through Apple's runtime (``python -m ane_vit.coreai.optimize`` ->
  ``results/coreai_compression_digits.json``), and the record of coremltools' PT2E routes;
* ``cli``: ``python -m ane_vit.coreai export | run | summary | runtimes | probes | accuracy``.

The Core AI packages are imported
inside the functions that need them. See ``notebooks/10_core_ai.ipynb``.
"""

from __future__ import annotations

from .accuracy import PROGRAM_BATCH, digits_accuracy, format_accuracy_table, predict_aimodel
from .cli import main
from .compare import (
    STUDY_MODELS,
    float16_op_survey,
    format_runtime_table,
    matmul_accumulation_probe,
    program_facts,
    run_study,
    run_survey,
    three_runtimes,
)
from .convert import PRECISIONS, output_names_for, to_aiprogram, to_exported_program
from .mac import (
    COMPUTE_UNIT_KINDS,
    compile_aimodel,
    compute_plan,
    require_coreai_framework,
    specialization_options,
)
from .paths import (
    AIMODEL_SUFFIX,
    aimodel_nbytes,
    check_aimodel,
    default_aimodel_filename,
    resolve_aimodel_target,
)
from .runtime import AIModelRunner, random_inputs, run_aimodel, run_sync
from .save import export_moat, export_model, read_aimodel_metadata, save_aiprogram
from .stack import (
    COREAI_PINS,
    WHERE_COREAI_INSTALLS,
    CoreAIUnavailableError,
    coreai_status,
    coreai_versions,
    require_coreai,
)
from .summary import LAYOUT_OPS, AIOp, AIProgramReport, AITensor, summarize

__all__ = [
    "COREAI_PINS",
    "WHERE_COREAI_INSTALLS",
    "CoreAIUnavailableError",
    "coreai_status",
    "coreai_versions",
    "require_coreai",
    "PRECISIONS",
    "to_exported_program",
    "to_aiprogram",
    "output_names_for",
    "AIMODEL_SUFFIX",
    "resolve_aimodel_target",
    "check_aimodel",
    "aimodel_nbytes",
    "default_aimodel_filename",
    "export_model",
    "export_moat",
    "save_aiprogram",
    "read_aimodel_metadata",
    "AIModelRunner",
    "run_aimodel",
    "random_inputs",
    "run_sync",
    "LAYOUT_OPS",
    "AITensor",
    "AIOp",
    "AIProgramReport",
    "summarize",
    "three_runtimes",
    "program_facts",
    "matmul_accumulation_probe",
    "float16_op_survey",
    "run_survey",
    "STUDY_MODELS",
    "run_study",
    "format_runtime_table",
    "PROGRAM_BATCH",
    "digits_accuracy",
    "predict_aimodel",
    "format_accuracy_table",
    "COMPUTE_UNIT_KINDS",
    "require_coreai_framework",
    "specialization_options",
    "compute_plan",
    "compile_aimodel",
    "main",
]

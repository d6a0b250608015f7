"""Three runtimes, one model: PyTorch float32 vs the Core ML program vs the Core AI program.

``three_runtimes(model, x)`` converts the model twice per precision (float32 and float16):

* to a Core ML ML Program (``ane_vit.export.to_mlprogram``, iOS16), run here by our numpy
  interpreter ``ane_vit.interpret`` (every op rounded to the program's dtype);
* to a Core AI program (``ane_vit.coreai.to_aiprogram``), run by Apple's runtime (the CPU
  runtime of the ``coreai-core`` wheel on Linux);

and compares each output with PyTorch float32 (the reference), and the two programs with
each other, as max abs error and PSNR (``ane_vit.testing``; the peak is the reference's
largest magnitude). For float16 it adds a yardstick: the same model run in PyTorch with
every op's result rounded to float16 (``ane_vit.testing.float16_storage_forward``), i.e.
what float16 *storage* alone costs. Apple's runtime is an oracle we did not write: when it
and our interpreter differ by much more than either differs from that yardstick, one of the
two computes something else, and chapter 10 says which.

Program facts ride along: each program's op count (``ane_vit.analysis`` for the ML
Program, ``ane_vit.coreai.summarize`` for the Core AI one). Nothing here is a latency.
The book's table comes from ``python -m ane_vit.coreai runtimes`` (``run_study``),
committed as ``results/coreai_three_runtimes.json``.
"""

from __future__ import annotations

import copy
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..bench.measure import _cpu_model
from ..testing import max_abs_error, psnr
from .convert import PRECISIONS, output_names_for, to_aiprogram
from .paths import check_aimodel
from .runtime import run_aimodel
from .save import save_aiprogram
from .stack import coreai_versions, require_coreai

__all__ = ["three_runtimes", "program_facts", "matmul_accumulation_probe", "float16_op_survey", "STUDY_MODELS",
           "run_study", "run_survey", "format_runtime_table"]


def _pair(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    r, t = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    return {"max_abs": max_abs_error(r, t), "psnr_db": psnr(r, t)}


def _coreml_facts(mlmodel: Any) -> dict[str, Any]:
    from ..analysis import analyze

    report = analyze(mlmodel)
    hist = report.histogram()
    ranks = [t.rank for op in report.ops for t in op.outputs]
    softmax = [op for op in report.ops if op.op_type == "softmax"]
    return {"ops": len(report.ops), "layout_ops": len(report.layout_ops), "transposes": hist.get("transpose", 0),
            "max_rank": max(ranks, default=0), "values_rank_5": sum(r == 5 for r in ranks),
            "softmax": len(softmax), "histogram": dict(hist.most_common())}


def _coreai_facts(path: Path) -> dict[str, Any]:
    from .summary import summarize

    report = summarize(path)
    s = report.summary()
    keys = ("ops", "ops_inlined", "layout_ops", "transposes", "transposes_moving_last_axis", "max_rank",
            "values_rank_5", "softmax", "softmax_axes", "file_bytes", "constant_bytes")
    return {**{k: s[k] for k in keys}, "histogram": dict(report.histogram().most_common()),
            "histogram_inlined": dict(report.histogram(inlined=True).most_common())}


def program_facts(model: nn.Module, example_input: torch.Tensor, precision: str = "float16") -> dict[str, Any]:
    """Op counts and layout facts of the model's ML Program and of its Core AI program (nothing is run).

    Shapes: ``example_input: (B, C, H, W)``.
    """
    require_coreai("program_facts")
    from ..export import to_mlprogram

    with torch.no_grad():
        names = output_names_for(model.eval()(example_input))
    mlmodel = to_mlprogram(model, example_input, ["x"], precision, "iOS16", output_names=names)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_aiprogram(to_aiprogram(model, example_input, precision=precision, output_names=names),
                              Path(tmp) / "model.aimodel")
        return {"coreml": _coreml_facts(mlmodel), "coreai": _coreai_facts(path)}


def three_runtimes(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    precisions: Sequence[str] = PRECISIONS,
    output_names: Sequence[str] | None = None,
    facts: bool = True,
    aimodels: Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Compare PyTorch float32, the Core ML program (interpreted) and the Core AI program (Apple's runtime).

    Args:
        model: an exportable module with non-trivial weights (``ane_vit.testing.randomize_``
            or trained): zeros and ones hide mistakes.
        example_input: the float32 input all three runtimes get (float16 programs get it
            rounded to float16, as their declared input type requires).
        precisions: any of ``"float32"``, ``"float16"``.
        output_names: the programs' output names (default ``output`` / ``output_0, ...``).
        facts: also record each program's op counts (``program_facts`` fields).
        aimodels: Core AI programs of this model already saved, by precision (they must take
            ``x`` and have ``output_names``); the others are converted here.

    Shapes: ``example_input: (B, C, H, W)``; every output is compared at its full shape.

    Returns:
        ``{"input_shape", "outputs", "rows": [...], "programs": {precision: {...}}}``; one row
        per precision and output with ``peak`` (max abs of the reference) and, each as
        ``{"max_abs", "psnr_db"}``: ``coreml_vs_pytorch``, ``coreai_vs_pytorch``,
        ``coreai_vs_coreml`` and, for float16, ``fp16_storage_vs_pytorch``.
    """
    require_coreai("three_runtimes")
    from ..export import to_mlprogram
    from ..interpret import run_program
    from ..testing import float16_storage_forward

    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precisions must be drawn from {list(PRECISIONS)}, got {p!r}")
    model = model.eval()
    with torch.no_grad():
        reference = model(example_input)
    names = output_names_for(reference, output_names)
    reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    ref = {n: t.numpy() for n, t in zip(names, reference)}
    x = example_input.numpy()
    rows, programs = [], {}
    for precision in precisions:
        mlmodel = to_mlprogram(model, example_input, ["x"], precision, "iOS16", output_names=names)
        coreml = run_program(mlmodel, {"x": x})
        with tempfile.TemporaryDirectory() as tmp:
            if aimodels is not None and precision in aimodels:
                path = check_aimodel(aimodels[precision])
            else:
                path = save_aiprogram(to_aiprogram(model, example_input, precision=precision, output_names=names),
                                      Path(tmp) / "model.aimodel")
            coreai = run_aimodel(path, {"x": x})
            if sorted(coreai) != sorted(names):
                raise ValueError(f"the Core AI program {str(path)!r} has outputs {sorted(coreai)}, expected {names}")
            if facts:
                programs[precision] = {"coreml": _coreml_facts(mlmodel), "coreai": _coreai_facts(path)}
        storage = {}
        if precision == "float16":
            outs, _ = float16_storage_forward(copy.deepcopy(model), example_input)
            outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
            storage = {n: t.numpy() for n, t in zip(names, outs)}
        for n in names:
            row = {
                "precision": precision, "output": n, "shape": list(ref[n].shape),
                "peak": float(np.max(np.abs(ref[n]))),
                "coreml_vs_pytorch": _pair(ref[n], coreml[n]),
                "coreai_vs_pytorch": _pair(ref[n], coreai[n]),
                "coreai_vs_coreml": _pair(coreml[n], coreai[n]),
            }
            if storage:
                row["fp16_storage_vs_pytorch"] = _pair(ref[n], storage[n])
            rows.append(row)
    return {"input_shape": list(example_input.shape), "outputs": names, "rows": rows, "programs": programs}


# --------------------------------------------------------------------------- why the two disagree


class _Gram(nn.Module):
    """``a @ a^T``: one ``batch_matmul`` with a reduction of length K. Shapes: ``(1, R, K) -> (1, R, R)``."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, a.transpose(-1, -2))


def _ulps(test: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """Error of ``test`` in float16 units in the last place at the exact value (mean, max)."""
    ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    err = np.abs(np.asarray(test, np.float64) - exact) / ulp
    return {"mean": float(err.mean()), "max": float(err.max())}


def _errors(test: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """``_ulps`` plus the largest error relative to the largest exact magnitude (as PSNR's peak)."""
    worst = float(np.max(np.abs(np.asarray(test, np.float64) - exact)))
    return {**_ulps(test, exact), "max_abs_over_peak": worst / float(np.max(np.abs(exact)))}


def matmul_accumulation_probe(k: int = 256, rows: int = 8, seed: int = 0) -> dict[str, Any]:
    """How each float16 runtime sums a ``batch_matmul``: Apple's runtime vs ``ane_vit.interpret``.

    One ``a @ a^T`` with ``a`` of shape ``(1, rows, k)`` (uniform in [0, 1), float16 values),
    converted to a float16 Core AI program (run by Apple's runtime) and a float16 ML Program
    (run by ``ane_vit.interpret``), and compared with three numpy computations: the exact sum
    (float64), float32 accumulation rounded once to float16, and *sequential float16
    accumulation* (each product and each partial sum rounded to float16, in index order).
    Errors are in float16 ulps of the exact value.

    Returns:
        a dict with ``k``, ``rows``, ``ulps_vs_exact`` (mean and max for each of the five
        results) and the largest differences ``apple_vs_fp16_sequential_max_abs`` and
        ``interpreter_vs_fp32_once_max_abs``: 0.0 says the runtime computes exactly that sum.
    """
    require_coreai("matmul_accumulation_probe")
    from ..export import to_mlprogram
    from ..interpret import run_program

    if k < 1 or rows < 1:
        raise ValueError(f"k and rows must be positive, got k={k}, rows={rows}")
    a = torch.rand(1, rows, k, generator=torch.Generator().manual_seed(seed)).half().float()
    model = _Gram().eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_aiprogram(to_aiprogram(model, a, precision="float16"), Path(tmp) / "gram.aimodel")
        apple = run_aimodel(path, {"x": a.numpy()})["output"][0].astype(np.float64)
    mlmodel = to_mlprogram(model, a, ["x"], "float16", "iOS16", output_names=["output"])
    interpreted = run_program(mlmodel, {"x": a.numpy()})["output"]
    interpreted = np.asarray(interpreted[0], np.float64)
    A = a.double().numpy()[0]
    exact = A @ A.T
    once = (A.astype(np.float32) @ A.T.astype(np.float32)).astype(np.float16).astype(np.float64)
    products = (A[:, None, :] * A[None, :, :]).astype(np.float16)  # each product rounded
    total = np.zeros(exact.shape, np.float16)
    for i in range(k):
        total = (total + products[:, :, i]).astype(np.float16)  # each partial sum rounded
    sequential = total.astype(np.float64)
    return {
        "k": k, "rows": rows,
        "ulps_vs_exact": {"apple_runtime": _ulps(apple, exact), "interpreter": _ulps(interpreted, exact),
                          "fp32_accumulate_round_once": _ulps(once, exact), "fp16_sequential": _ulps(sequential, exact)},
        "apple_vs_fp16_sequential_max_abs": float(np.max(np.abs(apple - sequential))),
        "interpreter_vs_fp32_once_max_abs": float(np.max(np.abs(interpreted - once))),
    }


class _Gelu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x)


class _Softmax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)


class _Mean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


class _Sigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


def _survey_cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    """One op each, at sizes of the book's models (inputs and weights are float16 values)."""
    from ..norm import LayerNormANE
    from ..testing import randomize_

    g = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(shape, generator=g) * scale).half().float()

    conv1 = randomize_(nn.Conv2d(256, 64, 1, bias=False), seed=1)
    conv3 = randomize_(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), seed=2)
    norm = randomize_(LayerNormANE(64), seed=3)
    return [
        ("batch_matmul, sum of 64 terms", _Gram(), rand(1, 8, 64).abs()),
        ("batch_matmul, sum of 256 terms", _Gram(), rand(1, 8, 256).abs()),
        ("conv2d 1x1, 256 input channels", conv1, rand(1, 256, 8, 8)),
        ("conv2d 3x3 depthwise, 64 channels", conv3, rand(1, 64, 8, 8)),
        ("LayerNormANE over 64 channels", norm, rand(1, 64, 1, 64, scale=3.0)),
        ("softmax over 64 channels", _Softmax(), rand(1, 64, 1, 64, scale=3.0)),
        ("mean over 64 channels", _Mean(), rand(1, 64, 1, 64)),
        ("gelu", _Gelu(), rand(1, 64, 8, 8, scale=3.0)),
        ("sigmoid", _Sigmoid(), rand(1, 64, 8, 8, scale=3.0)),
    ]


def float16_op_survey() -> dict[str, Any]:
    """How closely each float16 runtime computes single ops: Apple's runtime and ``ane_vit.interpret``.

    For each case of a few ops at the sizes of this book's models (``batch_matmul`` sums,
    1x1 and depthwise convolutions, ``LayerNormANE``, softmax, mean, GELU, sigmoid), with
    inputs and weights that are float16 values: the op's float16 Core AI program run by
    Apple's runtime and its float16 ML Program run by our interpreter, each compared with
    the exact result (float64) in float16 ulps at each value. A correctly rounded result is
    within 0.5 ulp; more means the runtime rounds inside the op, or approximates a function.
    Each route converts the op its own way: ``LayerNormANE`` is one ``layer_norm`` op in the
    ML Program and a chain of reductions and elementwise ops in the Core AI program, each
    rounded to float16. Errors at values near zero are large in ulps and small in absolute
    terms, so each case also gives the largest error over the largest exact magnitude.

    Returns:
        a dict whose ``cases`` list holds, per op, its name (``op``) and, for
        ``apple_runtime`` and ``interpreter``, the ``mean`` and ``max`` error in ulps and
        ``max_abs_over_peak``.
    """
    require_coreai("float16_op_survey")
    from ..export import to_mlprogram
    from ..interpret import run_program

    rows = []
    for name, module, x in _survey_cases():
        module = module.eval()
        with torch.no_grad():
            for t in module.parameters():
                t.copy_(t.half().float())  # float16 weights, so both runtimes start from the same values
            exact = copy.deepcopy(module).double()(x.double()).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            path = save_aiprogram(to_aiprogram(module, x, precision="float16"), Path(tmp) / "op.aimodel")
            apple = run_aimodel(path, {"x": x.numpy()})["output"]
        mlmodel = to_mlprogram(module, x, ["x"], "float16", "iOS16", output_names=["output"])
        interpreted = run_program(mlmodel, {"x": x.numpy()})["output"]
        rows.append({"op": name, "apple_runtime": _errors(apple, exact), "interpreter": _errors(interpreted, exact)})
    return {"cases": rows}


# --------------------------------------------------------------------------- the study


def _tiny_moat(mode: str) -> tuple[nn.Module, torch.Tensor]:
    from ..moat import build_model
    from ..testing import randomize_

    _, model = build_model((1, 3, 256, 256), "tiny-moat-0", attention_mode=mode)
    return randomize_(model, seed=0).eval(), torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))


def _tiny_moat_reference() -> tuple[nn.Module, torch.Tensor]:
    from ..reference.moat import build_reference_model
    from ..testing import randomize_

    _, model = build_reference_model((1, 3, 256, 256), "tiny-moat-0", attention_mode="global")
    return randomize_(model, seed=0).eval(), torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))


def _deit() -> tuple[nn.Module, torch.Tensor]:
    from ..deit import build_deit
    from ..testing import randomize_

    return randomize_(build_deit("deit-tiny"), seed=0).eval(), torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _digits(kind: str) -> tuple[nn.Module, torch.Tensor]:
    from ..digits import load_data, load_model
    from ..digits.evaluate import stratified_subset

    _, _, x, y = load_data()
    return load_model(kind), x[stratified_subset(y, 1)]  # one test image per class: (10, 3, 64, 64)


#: Each model of the book's table by name, with its builder and what is measured. "runtimes" entries
#: run all three runtimes; "facts" entries only count ops (the reference twins, for the layout comparison).
STUDY_MODELS: dict[str, tuple[Callable[[], tuple[nn.Module, torch.Tensor]], str]] = {
    "tiny-moat-0 global (ANE layout)": (lambda: _tiny_moat("global"), "runtimes"),
    "tiny-moat-0 local (ANE layout)": (lambda: _tiny_moat("local"), "runtimes"),
    "DeiT-Tiny (ANE layout)": (_deit, "runtimes"),
    "digits micro-moat (ANE layout)": (lambda: _digits("ane"), "runtimes"),
    "tiny-moat-0 global (reference)": (_tiny_moat_reference, "facts"),
    "digits micro-moat (reference)": (lambda: _digits("reference"), "facts"),
}
_WEIGHTS = {"digits": "trained (ane_vit/data/digits_micro_moat.pt)", "other": "ane_vit.testing.randomize_(seed=0)"}
_INPUTS = {"digits": "one test image per class (ane_vit.digits, stratified_subset(y, 1))",
           "other": "torch.rand with torch.Generator().manual_seed(0)"}


def run_study(models: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``three_runtimes`` (or ``program_facts``) on ``STUDY_MODELS``; JSON-ready, with provenance."""
    require_coreai("run_study")
    log = log or (lambda _: None)
    chosen = list(STUDY_MODELS) if models is None else list(models)
    unknown = [m for m in chosen if m not in STUDY_MODELS]
    if unknown:
        raise ValueError(f"unknown study model(s) {unknown}; choose from {list(STUDY_MODELS)}")
    entries = []
    for name in chosen:
        build, what = STUDY_MODELS[name]
        model, x = build()
        kind = "digits" if name.startswith("digits") else "other"
        t0 = time.process_time()
        if what == "runtimes":
            result = three_runtimes(model, x)
        else:
            result = {"input_shape": list(x.shape), "programs": {"float16": program_facts(model, x, "float16")}}
        entries.append({"model": name, "kind": what, "weights": _WEIGHTS[kind], "input": _INPUTS[kind], **result})
        log(f"{name}: done ({time.process_time() - t0:.0f} s CPU)")  # console only: no timing is recorded
    return {
        "what": ("PyTorch float32 vs the Core ML ML Program (coremltools, iOS16) run by ane_vit.interpret vs the "
                 "Core AI program (coreai-torch) run by Apple's Core AI runtime (the coreai-core wheel's CPU runtime); "
                 "float32 and float16 programs; max abs error and PSNR (peak = max |PyTorch float32|). "
                 "Program facts are op counts of each program; nothing here is a latency, and no timing is recorded."),
        "models": entries,
        "provenance": _provenance("python -m ane_vit.coreai runtimes --overwrite"),
    }


def _provenance(command: str) -> dict[str, Any]:
    from .. import __version__
    from .._versions import dist_version

    return {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.system()} {platform.machine()} ({_cpu_model()}, {os.cpu_count()} logical CPUs)",
        "python": platform.python_version(),
        "versions": {"ane_vit": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "coremltools": dist_version("coremltools"), **coreai_versions()},
    }


def run_survey() -> dict[str, Any]:
    """``matmul_accumulation_probe`` for sums of 16 to 1,024 terms and ``float16_op_survey``; with provenance."""
    require_coreai("run_survey")
    return {
        "what": ("float16 arithmetic of single ops: Apple's Core AI runtime (the coreai-core wheel's CPU runtime) and "
                 "ane_vit.interpret against exact results, in float16 ulps; the batch_matmul probe also against float32 "
                 "accumulation rounded once and sequential float16 accumulation. No timing is recorded."),
        "matmul_accumulation_probes": [matmul_accumulation_probe(k) for k in (16, 64, 256, 1024)],
        **float16_op_survey(),
        "provenance": _provenance("python -m ane_vit.coreai probes --overwrite"),
    }


def format_runtime_table(results: dict[str, Any]) -> str:
    """Markdown: one line per model and precision, worst output (largest max abs, lowest PSNR)."""
    lines = ["| model | precision | Core ML (interpreted) vs PyTorch | Core AI (Apple) vs PyTorch | Core AI vs Core ML | "
             "float16 storage vs PyTorch |", "|---|---|---|---|---|---|"]

    def worst(rows: list[dict], key: str) -> str:
        if not all(key in r for r in rows):
            return "-"
        return f"{max(r[key]['max_abs'] for r in rows):.2g} / {min(r[key]['psnr_db'] for r in rows):.1f} dB"

    for entry in results["models"]:
        if entry["kind"] != "runtimes":
            continue
        for precision in PRECISIONS:
            rows = [r for r in entry["rows"] if r["precision"] == precision]
            if rows:
                lines.append(f"| {entry['model']} | {precision} | {worst(rows, 'coreml_vs_pytorch')} | "
                             f"{worst(rows, 'coreai_vs_pytorch')} | {worst(rows, 'coreai_vs_coreml')} | "
                             f"{worst(rows, 'fp16_storage_vs_pytorch')} |")
    return "\n".join(lines)

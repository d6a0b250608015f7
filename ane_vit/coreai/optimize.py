"""coreai-opt on the digits micro-moat: palettization, int8 weights and W8A8 as Core AI programs.

Chapter 8 compresses the *converted* program with ``coremltools.optimize.coreml``; Apple's
Core AI stack compresses the *PyTorch* model with ``coreai-opt`` and converts afterwards.
Each row of ``METHODS`` goes through the same four steps:

1. ``prepare_for_compression``: the trained ANE model with its batch norms folded into the
   convolutions next to them (exact in eval mode). Two reasons. coreai-opt compresses the
   weights of conv *modules*; the ANE model's ``MBConv(fold_pre_norm=True)`` computes its
   1x1 expand weight inside ``forward``, so without this step the palettizer skips those four
   convs (a fifth of the weights) and the eager quantizer stops on them. And coremltools,
   whose rows we compare with, compresses the program's weights after its converter folded
   the batch norms: folding first makes both compress the same numbers.
2. ``compress``: ``KMeansPalettizer`` (per-tensor look-up tables) or ``Quantizer`` (int8
   weights per channel; W8A8 with calibration), then ``finalize(backend=ExportBackend.CoreAI)``.
3. ``torch.export`` -> coreai-torch's decompositions -> ``cast_to_16_bit_precision`` (the
   uncompressed rest in float16, like chapter 8's float16 programs) -> ``TorchConverter`` ->
   ``.aimodel``.
4. Apple's runtime (its Linux build is a CPU reference, not a device) on the test images.

W8A8: the documented default (``QuantizerConfig()``: int8 weights per channel, int8
activations per tensor with a moving-average min/max observer) collapses this model to
chance when ``prepare`` gets a zero example input, because the observer's running range
starts from that input and moves only 1 % per calibration batch. A representative example
input (the first calibration batch) or the ``global_minmax`` observer fixes it; ``w8a8_study``
records the evidence. ``pt2e_coremltools`` records what coremltools' own PT2E route does
with torch 2.13.

``python -m ane_vit.coreai.optimize`` regenerates ``results/coreai_compression_digits.json``;
``markdown_table`` renders it for chapter 10. Needs coreai-core, coreai-torch and coreai-opt
(imported inside the functions). See ``notebooks/08_real_data_and_compression.ipynb``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "CoreAIMethod",
    "METHODS",
    "PROGRAM_BATCH",
    "CALIBRATION_IMAGES",
    "RESULTS_FILE",
    "prepare_for_compression",
    "compress",
    "compressed_weights",
    "wilson_interval",
    "evaluate",
    "w8a8_study",
    "pt2e_coremltools",
    "markdown_table",
    "main",
]

#: Batch of every exported program (chapter 8's programs use the same); inputs are padded to it.
PROGRAM_BATCH = 40
#: Training images that calibrate W8A8 (chapter 8's W8A8 row uses the same 160).
CALIBRATION_IMAGES = 160
#: Where ``python -m ane_vit.coreai.optimize`` writes, relative to the repository root.
RESULTS_FILE = "results/coreai_compression_digits.json"
_KINDS = ("float", "palettize", "int8", "w8a8")
_EXAMPLES = ("calibration", "zeros", "randn")
_OBSERVERS = ("moving_average", "global_minmax")


@dataclass(frozen=True)
class CoreAIMethod:
    """One row: what coreai-opt does, and the chapter 8 (coremltools) row it is compared with.

    Attributes:
        kind: ``"float"`` (no compression), ``"palettize"``, ``"int8"`` (weights) or ``"w8a8"``.
        nbits: bits per palette index (``palettize`` only: 1, 2, 3, 4, 6 or 8).
        fp16: cast the uncompressed rest of the program to float16 (``cast_to_16_bit_precision``).
        example: W8A8 only, the example input ``prepare`` runs first, which *initialises* every
            activation range: ``"calibration"`` (the first calibration batch), ``"zeros"`` or
            ``"randn"``.
        observer: W8A8 only, the activation range rule: ``"moving_average"`` (coreai-opt's
            default, ``r <- 0.99 r + 0.01 r_batch``) or ``"global_minmax"`` (min/max over all).
        coremltools_stage: the matching ``stage`` of ``results/digits.json`` (or None).
    """

    kind: str
    nbits: int | None = None
    fp16: bool = True
    example: str = "calibration"
    observer: str = "moving_average"
    coremltools_stage: str | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if (self.kind == "palettize") != (self.nbits is not None):
            raise ValueError(f"nbits is for kind 'palettize' only (1, 2, 3, 4, 6 or 8), got kind {self.kind!r}, nbits {self.nbits!r}")
        if self.nbits is not None and self.nbits not in (1, 2, 3, 4, 6, 8):
            raise ValueError(f"nbits must be one of 1, 2, 3, 4, 6, 8, got {self.nbits!r}")
        if self.example not in _EXAMPLES or self.observer not in _OBSERVERS:
            raise ValueError(f"example must be one of {_EXAMPLES} and observer one of {_OBSERVERS}, "
                             f"got {self.example!r}, {self.observer!r}")

    def describe(self) -> dict:
        """The settings as JSON (only those that apply to the kind)."""
        out = {"kind": self.kind, "fp16": self.fp16}
        if self.kind == "palettize":
            out.update(nbits=self.nbits, granularity="per tensor", algorithm="k-means (coreai-opt KMeansPalettizer)")
        elif self.kind == "int8":
            out.update(weights="int8, symmetric, per output channel (QuantizerConfig.presets.w8, eager mode)")
        elif self.kind == "w8a8":
            out.update(weights="int8, symmetric, per output channel", activations="int8, symmetric, per tensor",
                       observer=self.observer, example_input=self.example, execution_mode="graph (torchao PT2E)")
        return out


_CT = "program {}"  # chapter 8's stage names
#: The rows of ``results/coreai_compression_digits.json``, in order.
METHODS: dict[str, CoreAIMethod] = {
    "float32": CoreAIMethod("float", fp16=False),
    "float16": CoreAIMethod("float", coremltools_stage="program fp16 (iOS16), interpreted"),
    **{f"palettize {n} bit": CoreAIMethod("palettize", nbits=n, coremltools_stage=_CT.format(f"palettize {n} bit"))
       for n in (8, 6, 4, 2)},
    "int8 weights per channel": CoreAIMethod("int8", coremltools_stage=_CT.format("int8 per channel")),
    "W8A8, default config, zero example input": CoreAIMethod(
        "w8a8", example="zeros", coremltools_stage=_CT.format("W8A8, calibrated on 160 training images")),
    "W8A8, default config, example = 1st calibration batch": CoreAIMethod(
        "w8a8", example="calibration", coremltools_stage=_CT.format("W8A8, calibrated on 160 training images")),
    "W8A8, global min/max observer, zero example input": CoreAIMethod(
        "w8a8", example="zeros", observer="global_minmax",
        coremltools_stage=_CT.format("W8A8, calibrated on 160 training images")),
}


# --------------------------------------------------------------------------- the model


def _conv_after_bn(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv(bn(x))`` as one conv with bias; exact for a 1x1 conv (no padding to disagree)."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError(f"a batch norm folds exactly only into a following 1x1 dense conv, got {conv}")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=conv.stride, bias=True)
    with torch.no_grad():
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C_in,): bn(x) = x * scale + shift
        shift = bn.bias - bn.running_mean * scale  # (C_in,)
        fused.weight.copy_(conv.weight * scale.reshape(1, -1, 1, 1))  # (C_out, C_in, 1, 1)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        fused.bias.copy_(bias + conv.weight.flatten(1) @ shift)  # (C_out, C_in) @ (C_in,) -> (C_out,)
    return fused.train(conv.training)


def prepare_for_compression(model: nn.Module) -> nn.Module:
    """A copy of an ANE MOAT in eval mode with every batch norm of its MBConvs folded into a conv.

    In each ``MBConv``: the pre-norm into the 1x1 expand conv (which ``fold_pre_norm`` did
    inside ``forward``), and the expand, depthwise and project norms into their convs
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``). The function is unchanged (float32
    rounding aside); compressors then see every weight the program stores as a conv module's
    parameter. The stem's batch norm sits between a GELU and a padded 3x3 conv, where no exact
    fold exists, and stays.

    Shapes: the model's, e.g. ``x: (B, 3, 64, 64) -> (B, 10)`` for the digits.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from ..layers import MBConv

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model).eval()
    for block in model.modules():
        if not isinstance(block, MBConv):
            continue
        if block.expand is not None:
            block.expand = _conv_after_bn(block.pre_norm, block.expand)
            block.pre_norm, block.fold_pre_norm = nn.Identity(), False
            block.expand, block.expand_norm = fuse_conv_bn_eval(block.expand, block.expand_norm), nn.Identity()
        block.depthwise, block.depthwise_norm = fuse_conv_bn_eval(block.depthwise, block.depthwise_norm), nn.Identity()
        block.project, block.project_norm = fuse_conv_bn_eval(block.project, block.project_norm), nn.Identity()
    return model


# --------------------------------------------------------------------------- compression


def _w8a8_config(observer: str):
    from coreai_opt.quantization import ModuleQuantizerConfig, QuantizerConfig
    from coreai_opt.quantization.spec import (
        PerTensorGranularity,
        QuantizationSpec,
        default_weight_quantization_spec,
    )

    if observer == "moving_average":
        return QuantizerConfig()  # the documented default: W8 per channel, A8 per tensor, moving average
    act = QuantizationSpec(dtype=torch.int8, qscheme="symmetric", granularity=PerTensorGranularity(),
                           fake_quantize_cls="default", qparam_calculator_cls=observer, range_calculator_cls="minmax")
    return QuantizerConfig(global_config=ModuleQuantizerConfig(
        op_input_spec={"*": act}, op_output_spec={"*": act}, op_state_spec={"weight": default_weight_quantization_spec()}))


def _example(method: CoreAIMethod, calibration: torch.Tensor | None, batch: int) -> torch.Tensor:
    if method.kind == "w8a8" and method.example == "zeros":
        return torch.zeros(batch, 3, 64, 64)
    if method.kind == "w8a8" and method.example == "randn":
        return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    if calibration is None or len(calibration) < batch:
        raise ValueError(f"{method.kind} needs calibration images (N >= batch = {batch}, shape (N, 3, 64, 64)), "
                         f"got {None if calibration is None else tuple(calibration.shape)}")
    return calibration[:batch]


def compress(model: nn.Module, method: CoreAIMethod, calibration: torch.Tensor | None = None,
             batch: int = PROGRAM_BATCH, probe: torch.Tensor | None = None) -> tuple[nn.Module, torch.Tensor | None]:
    """Compress ``prepare_for_compression(model)`` with coreai-opt and finalize it for Core AI.

    Args:
        model: a model from ``prepare_for_compression`` (not modified: compressed on a copy).
        method: what to do (``METHODS``).
        calibration: images; their first ``batch`` are the example input of ``prepare`` (and,
            for W8A8, all of them calibrate in batches of ``batch``: N a multiple of ``batch``).
        batch: the batch the graph is captured with (W8A8 fixes it).
        probe: images whose predicted labels the *prepared* (fake-compressed) PyTorch model
            gives, before ``finalize`` (None: skipped).

    Shapes: ``calibration, probe: (N, 3, 64, 64)``; returns ``(model, labels (N_probe,) or None)``.

    Raises:
        ValueError: for calibration images missing or not a multiple of ``batch``.
    """
    from coreai_opt import ExportBackend

    model = copy.deepcopy(model).eval()
    if method.kind == "float":
        return model, (_labels(model, probe, batch) if probe is not None else None)
    example = _example(method, calibration, batch)
    if method.kind == "w8a8" and (calibration is None or len(calibration) % batch):
        raise ValueError(f"W8A8 needs calibration images, a multiple of batch={batch}, shape (N, 3, 64, 64); "
                         f"got {None if calibration is None else tuple(calibration.shape)}")
    if method.kind == "palettize":
        from coreai_opt.palettization import (
            KMeansPalettizer,
            KMeansPalettizerConfig,
            ModuleKMeansPalettizerConfig,
            PalettizationSpec,
        )

        config = KMeansPalettizerConfig(global_config=ModuleKMeansPalettizerConfig(
            op_state_spec={"weight": PalettizationSpec(n_bits=method.nbits)}))
        compressor = KMeansPalettizer(model, config)
        with contextlib.redirect_stderr(io.StringIO()):  # its per-layer progress bar (tqdm) and nothing else
            prepared = compressor.prepare((example,))
    else:
        from coreai_opt.quantization import ExecutionMode, Quantizer, QuantizerConfig

        config = (QuantizerConfig.presets.w8(execution_mode=ExecutionMode.EAGER) if method.kind == "int8"
                  else _w8a8_config(method.observer))
        compressor = Quantizer(model, config)
        prepared = compressor.prepare((example,))
        if method.kind == "w8a8":
            with compressor.calibration_mode(), torch.no_grad():
                for i in range(0, len(calibration), batch):
                    prepared(calibration[i:i + batch])
    labels = _labels(prepared, probe, batch) if probe is not None else None
    return compressor.finalize(backend=ExportBackend.CoreAI), labels


def compressed_weights(model: nn.Module) -> dict[str, int]:
    """What a model finalized by ``compress`` stores compressed: the weight tensors held as
    8-bit integers (palette indices or int8 values; zero points excluded) and their elements."""
    tensors = elements = 0
    for name, buf in model.named_buffers():
        if buf.dtype in (torch.int8, torch.uint8) and buf.dim() > 1 and not name.endswith("zero_point"):
            tensors, elements = tensors + 1, elements + buf.numel()
    return {"tensors": tensors, "elements": elements}


def _weight_elements(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@torch.no_grad()
def _labels(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    return _pad_batches(x, batch, lambda xb: model(xb)).argmax(1)


def _pad_batches(x: torch.Tensor, batch: int, fn: Callable) -> torch.Tensor:
    """Run ``fn`` on batches of exactly ``batch`` (the last padded with zeros); Shapes: (N, ...) -> (N, K)."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        n = len(xb)
        if n < batch:
            xb = torch.cat([xb, xb.new_zeros(batch - n, *xb.shape[1:])])
        out.append(torch.as_tensor(np.asarray(fn(xb)))[:n].float())
    return torch.cat(out)


# --------------------------------------------------------------------------- Core AI program


def _export_aimodel(model: nn.Module, path: Path, batch: int, fp16: bool) -> Path:
    """``model`` as a Core AI program (input ``x``, output ``logits``) at ``path``; replaces it."""
    from .convert import to_aiprogram
    from .save import save_aiprogram

    program = to_aiprogram(model, torch.zeros(batch, 3, 64, 64), precision="float16" if fp16 else "float32",
                           input_name="x", output_names=["logits"])
    return save_aiprogram(program, path, overwrite=True)


def _program_facts(path: Path) -> dict:
    """Operations and stored element types of a saved Core AI program (its ``summary()``)."""
    from coreai.authoring.asset import AIModelAsset

    summary = AIModelAsset.load(path).summary()
    ops = dict(summary.operation_distribution)
    return {"operations": sum(n for op, n in ops.items() if op != "constant"), "constants": ops.get("constant", 0),
            "compression_ops": {op: ops[op] for op in _COMPRESSION_OPS if op in ops},
            "storage_elements": dict(summary.storage_types)}


_COMPRESSION_OPS = ("lut_to_dense", "blockwise_shift_scale", "sparse_to_dense", "quantize", "dequantize")


def _run_aimodel(path: Path, x: torch.Tensor, batch: int, fp16: bool) -> torch.Tensor:
    """Logits of a saved Core AI program run by Apple's runtime; Shapes: ``x: (N, 3, 64, 64) -> (N, 10)``.

    ``batch`` and ``fp16`` describe the program as exported; the runner reads both from it (the
    last batch padded, float32 images cast for a float16 program).
    """
    from .accuracy import aimodel_outputs
    from .runtime import AIModelRunner

    with AIModelRunner(path) as runner:
        return torch.from_numpy(aimodel_outputs(runner, x))


# --------------------------------------------------------------------------- statistics


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval for ``correct`` successes in ``n`` trials (95 % by default).

    Raises:
        ValueError: unless ``0 <= correct <= n`` and ``n > 0`` are integers.
    """
    if isinstance(correct, bool) or isinstance(n, bool) or not isinstance(correct, int) or not isinstance(n, int) \
            or n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need integers 0 <= correct <= n, n > 0; got correct={correct!r}, n={n!r}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _accuracy(labels: torch.Tensor, y: torch.Tensor, fp32: torch.Tensor) -> dict:
    correct, n = int((labels == y).sum()), len(y)
    return {"accuracy": correct / n, "correct": correct, "n": n, "wilson_95": list(wilson_interval(correct, n)),
            "agreement_with_fp32": float((labels == fp32).double().mean())}


def _coremltools_row(digits: dict, stage: str | None) -> dict | None:
    if stage is None:
        return None
    rows = {r["stage"]: r for r in digits["stages"]}
    if stage not in rows:
        raise ValueError(f"results/digits.json has no stage {stage!r}; stages: {sorted(rows)}")
    row, n = rows[stage], int(digits["split"]["n_test"])
    correct = round(row["accuracy"] * n)
    return {"stage": stage, "bytes": row["bytes"], "accuracy": row["accuracy"], "correct": correct, "n": n,
            "wilson_95": list(wilson_interval(correct, n)), "agreement_with_fp32": row["agreement_with_fp32"]}


# --------------------------------------------------------------------------- the study


def _versions() -> dict:
    from .. import __version__
    from .._versions import dist_version

    names = ("torch", "numpy", "coreai-core", "coreai-torch", "coreai-opt", "torchao", "coremltools", "scikit-learn")
    return {**{name: dist_version(name) for name in names}, "ane_vit": __version__}


def _load_digits_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no chapter 8 results at {path} (the coremltools rows); "
                                f"make them with `python -m ane_vit.digits evaluate`")
    return json.loads(path.read_text())


def evaluate(
    methods: Sequence[str] | None = None,
    limit: int | None = None,
    work_dir: str | os.PathLike | None = None,
    digits_json: str | os.PathLike = "results/digits.json",
    study: bool = True,
    pt2e: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Every row of ``METHODS`` on the digits test split, through Apple's runtime; a JSON-ready dict.

    Args:
        methods: names of ``METHODS`` rows (default: all, in order).
        limit: ``stratified_subset`` with ``limit // 10`` test images per class instead of all 360.
        work_dir: keep the ``.aimodel`` programs there (default: a temporary folder).
        digits_json: chapter 8's results, whose matching coremltools row each row carries.
        study: also run ``w8a8_study`` (several graph-mode calibrations: minutes).
        pt2e: also record ``pt2e_coremltools``.
        log: called with one line per finished row.

    Raises:
        ValueError: for an unknown method name or a bad ``limit``; FileNotFoundError without ``digits_json``.
    """
    from ..digits import load_data, load_model
    from ..digits.evaluate import check_subset_limit, stratified_subset
    from ..export import package_nbytes

    log = log or (lambda _: None)
    names = list(METHODS) if methods is None else list(methods)
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"methods must be names of METHODS {list(METHODS)}, got {unknown or names}")
    check_subset_limit(limit)  # before any slow work
    digits = _load_digits_json(digits_json)
    x_train, _, x, y = load_data()
    if limit is not None:
        keep = stratified_subset(y, limit // 10)  # its indices are recorded below
        x, y = x[keep], y[keep]
    calibration = x_train[:CALIBRATION_IMAGES]
    fp32 = _labels(load_model("reference"), x, PROGRAM_BATCH)
    ane = load_model("ane")
    prepared = prepare_for_compression(ane)
    with torch.no_grad():
        folded_error = float(max((ane(x[i:i + PROGRAM_BATCH]) - prepared(x[i:i + PROGRAM_BATCH])).abs().max()
                                 for i in range(0, len(x), PROGRAM_BATCH)))
    total = _weight_elements(prepared)
    tmp = tempfile.TemporaryDirectory() if work_dir is None else None
    folder = Path(tmp.name if tmp else work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name in names:
            method = METHODS[name]
            model, fake = compress(prepared, method, calibration, PROGRAM_BATCH, probe=x)
            path = _export_aimodel(model, folder / f"digits_{len(rows):02d}_{method.kind}.aimodel", PROGRAM_BATCH, method.fp16)
            labels = _run_aimodel(path, x, PROGRAM_BATCH, method.fp16).argmax(1)
            row = {"method": name, "config": method.describe(), "bytes": package_nbytes(path),
                   "program": _program_facts(path),
                   **_accuracy(labels, y, fp32),
                   "pytorch_agreement_with_fp32": float((fake == fp32).double().mean()),
                   "weights_compressed": {**compressed_weights(model), "of_elements": total},
                   "labels": labels.tolist(),
                   "coremltools": _coremltools_row(digits, method.coremltools_stage)}
            rows.append(row)
            log(f"{name}: {row['bytes'] / 1e3:.0f} kB, accuracy {row['accuracy']:.4f}, "
                f"agreement {row['agreement_with_fp32']:.4f} (PyTorch {row['pytorch_agreement_with_fp32']:.4f})")
    finally:
        if tmp is not None:
            tmp.cleanup()
    base = next((r["bytes"] for r in rows if r["method"] == "float16"), None)
    for r in rows:
        r["ratio_to_float16"] = None if base is None else base / r["bytes"]
    results = {
        "model": "micro-moat (ane_vit.digits.load_model('ane'))",
        "what": ("coreai-opt compression of the digits model, converted with coreai-torch and run by Apple's Core AI "
                 "runtime (its Linux build: a CPU reference, not a device); every row on the same test images as "
                 "chapter 8, next to chapter 8's coremltools row (results/digits.json, run by ane_vit.interpret)"),
        "split": {"n_test": len(y), "subset": limit is not None, "seed": 0, "test_fraction": 0.2,
                  "indices": None if limit is None else keep.tolist()},
        "program_batch": PROGRAM_BATCH,
        "calibration": {"images": CALIBRATION_IMAGES, "source": "the first 160 training images (load_data()[0][:160])"},
        "preparation": {"what": "prepare_for_compression: MBConv batch norms folded into their convs (exact in eval mode)",
                        "max_abs_logit_difference": folded_error, "weight_elements": total},
        "agreement_reference": "labels of the reference model in PyTorch float32",
        "rows": rows,
    }
    if study:
        results["w8a8_study"] = w8a8_study(prepared, x_train, x, y, fp32, log=log)
    if pt2e:
        results["pt2e_coremltools"] = pt2e_coremltools(log=log)
    return results


def _activation_quantizers(prepared) -> list[tuple[str, str, nn.Module]]:
    """``(module name, producing node, module)`` of every activation fake-quantizer, in graph order."""
    seen, out = set(), []
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        module = prepared.get_submodule(node.target)
        calculator = getattr(module, "qparams_calculator", None)
        if calculator is None or not hasattr(calculator, "running_min") or node.target in seen:
            continue
        seen.add(node.target)
        source = node.args[0].name if node.args and hasattr(node.args[0], "name") else "?"
        out.append((node.target, source, module))
    return out


@torch.no_grad()
def _sqnr_per_quantizer(prepared, x: torch.Tensor, batch: int) -> list[dict]:
    """For each activation quantizer: its calibrated range, the range it sees on ``x``, and the
    signal-to-quantization-noise ratio ``10 log10(sum q_in^2 / sum (q_in - q_out)^2)`` in dB."""
    quantizers = _activation_quantizers(prepared)
    stats = {name: [0.0, 0.0, 0.0] for name, _, _ in quantizers}  # signal, noise, max |x|

    def hook(name):
        def record(_module, inputs, output):
            s = stats[name]
            xin = inputs[0].detach().double()
            s[0] += float((xin ** 2).sum())
            s[1] += float(((xin - output.detach().double()) ** 2).sum())
            s[2] = max(s[2], float(xin.abs().max()))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, _, module in quantizers]
    try:
        for i in range(0, len(x), batch):  # a short last batch is filled with the first images again
            prepared(x[torch.arange(i, i + batch) % len(x)])
    finally:
        for h in handles:
            h.remove()
    out = []
    for name, source, module in quantizers:
        signal, noise, peak = stats[name]
        calc = module.qparams_calculator
        calibrated = float(torch.maximum(calc.running_max.abs(), calc.running_min.abs()).max())
        sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
        out.append({"quantizer": name, "input": source, "calibrated_max_abs": calibrated, "observed_max_abs": peak,
                    "sqnr_db": round(sqnr, 2) if math.isfinite(sqnr) else None})
    return out


#: W8A8 variants of ``w8a8_study``: name -> (example input, observer, calibration images).
W8A8_VARIANTS: dict[str, tuple[str, str, int]] = {
    "default, zero example, 160 images": ("zeros", "moving_average", 160),
    "default, zero example, 1,400 images": ("zeros", "moving_average", 1400),
    "default, random example (the docs' randn), 160 images": ("randn", "moving_average", 160),
    "default, example = 1st calibration batch, 160 images": ("calibration", "moving_average", 160),
    "default, example = 1st calibration batch, 40 images": ("calibration", "moving_average", 40),
    "global min/max observer, zero example, 160 images": ("zeros", "global_minmax", 160),
}
_EVIDENCE = ("default, zero example, 160 images", "default, example = 1st calibration batch, 160 images")


def w8a8_study(prepared: nn.Module, x_train: torch.Tensor, x: torch.Tensor, y: torch.Tensor, fp32: torch.Tensor,
               batch: int = PROGRAM_BATCH, log: Callable[[str], None] | None = None) -> dict:
    """Why the documented W8A8 default collapses here and what fixes it, in PyTorch fake-quant.

    Each variant of ``W8A8_VARIANTS`` prepares ``QuantizerConfig()`` (or the global min/max
    observer) with its example input, calibrates on the first N training images in batches of
    ``batch`` and predicts ``x``. For the zero-example and the calibration-example variants,
    every activation quantizer is listed in graph order with its calibrated range, the range
    it sees on ``x`` and its SQNR: where the collapse starts.

    Shapes: ``x_train, x: (N, 3, 64, 64)``; ``y, fp32: (N,)`` labels.
    """
    log = log or (lambda _: None)
    variants, evidence = [], {}
    for name, (example, observer, n_images) in W8A8_VARIANTS.items():
        method = CoreAIMethod("w8a8", example=example, observer=observer)
        from coreai_opt.quantization import Quantizer

        quantizer = Quantizer(copy.deepcopy(prepared), _w8a8_config(observer))
        model = quantizer.prepare((_example(method, x_train, batch),))
        with quantizer.calibration_mode(), torch.no_grad():
            for i in range(0, n_images, batch):
                model(x_train[i:i + batch])
        labels = _labels(model, x, batch)
        variants.append({"variant": name, "example_input": example, "observer": observer,
                         "calibration_images": n_images, "calibration_batches": n_images // batch,
                         "activation_quantizers": len(_activation_quantizers(model)), **_accuracy(labels, y, fp32)})
        log(f"W8A8 study, {name}: accuracy {variants[-1]['accuracy']:.4f}")
        if name in _EVIDENCE:
            nodes = _sqnr_per_quantizer(model, x, batch)
            low = [i for i, n in enumerate(nodes) if n["sqnr_db"] is not None and n["sqnr_db"] < 10]
            evidence[name] = {"quantizers": len(nodes), "below_10_db": len(low),
                              "first_below_10_db": None if not low else {"index": low[0], **nodes[low[0]]},
                              "median_sqnr_db": float(np.median([n["sqnr_db"] for n in nodes if n["sqnr_db"] is not None])),
                              "nodes": nodes}
    return {
        "what": ("W8A8 with coreai-opt's Quantizer in graph mode, PyTorch fake-quant (prepared and calibrated, before "
                 "finalize), on the test images; the moving-average observer updates r <- 0.99 r + 0.01 r_batch, "
                 "starting from the range of the example input given to prepare()"),
        "batch": batch,
        "variants": variants,
        "per_quantizer": evidence,
    }


# --------------------------------------------------------------------------- coremltools' PT2E route


def _pt2e_attempt(name: str) -> dict:
    """One attempt of ``pt2e_coremltools``, run in a fresh interpreter (prints JSON on stdout)."""
    import importlib
    import types

    from ..digits import load_data, load_model

    x_train = load_data()[0][:PROGRAM_BATCH]
    model = prepare_for_compression(load_model("ane"))
    try:
        if name == "CoreMLQuantizer, as shipped":
            importlib.import_module("coremltools.optimize.torch.quantization._coreml_quantizer")
            return {"works": True, "result": "imported"}
        if name == "CoreMLQuantizer, torch.ao PT2E modules aliased to torchao's":
            import torchao.quantization.pt2e.quantize_pt2e as quantize_pt2e
            import torchao.quantization.pt2e.quantizer as quantizer_pkg
            import torchao.quantization.pt2e.quantizer.quantizer as quantizer_mod
            import torchao.quantization.pt2e.quantizer.utils as quantizer_utils
            import torchao.quantization.pt2e.utils as pt2e_utils
            import torchao.testing.pt2e._xnnpack_quantizer_utils as xnnpack_utils

            xnnpack = types.ModuleType("xnnpack_quantizer")
            xnnpack._get_module_name_filter = quantizer_utils.get_module_name_filter
            sys.modules.update({
                "torch.ao.quantization.quantizer": quantizer_pkg, "torch.ao.quantization.quantizer.quantizer": quantizer_mod,
                "torch.ao.quantization.quantizer.xnnpack_quantizer": xnnpack,
                "torch.ao.quantization.quantizer.xnnpack_quantizer_utils": xnnpack_utils,
                "torch.ao.quantization.pt2e.utils": pt2e_utils, "torch.ao.quantization.quantize_pt2e": quantize_pt2e})
            from coremltools.optimize.torch.quantization import LinearQuantizerConfig
            from coremltools.optimize.torch.quantization._coreml_quantizer import CoreMLQuantizer

            config = LinearQuantizerConfig.from_dict({"global_config": {"quantization_scheme": "symmetric"}})
            graph = torch.export.export(model, (x_train,)).module()
            quantize_pt2e.prepare_pt2e(graph, CoreMLQuantizer(config))
            return {"works": True, "result": "prepare_pt2e ran"}
        if name == "coreai-opt W8A8 (graph mode), finalize(CoreML), ct.convert":
            import coremltools as ct
            from coreai_opt import ExportBackend
            from coreai_opt.quantization import Quantizer

            quantizer = Quantizer(model, _w8a8_config("moving_average"))
            prepared = quantizer.prepare((x_train,))
            with quantizer.calibration_mode(), torch.no_grad():
                prepared(x_train)
            final = quantizer.finalize(backend=ExportBackend.CoreML)
            ep = torch.export.export(final, (x_train,)).run_decompositions({})
            program = ct.convert(ep, inputs=[ct.TensorType(name="x", shape=tuple(x_train.shape))],
                                 minimum_deployment_target=ct.target.iOS17)
            ops = [op.op_type for f in program._get_mil_internal().functions.values() for op in f.operations]
            return {"works": "quantize" in ops, "result": f"converted; {ops.count('quantize')} quantize ops"}
        from coremltools.optimize.torch.quantization import LinearQuantizer, LinearQuantizerConfig

        if name == "LinearQuantizer (torch.fx) on the nn.Module":
            target = model
        elif name == "LinearQuantizer (torch.fx) on torch.export(...).module()":
            target = torch.export.export(model, (x_train,)).module()
        else:
            raise KeyError(name)
        config = LinearQuantizerConfig.from_dict({"global_config": {"quantization_scheme": "symmetric"}})
        out = LinearQuantizer(target, config).prepare(example_inputs=(x_train,), inplace=False)
        n = sum(1 for m in out.modules() if "FakeQuantize" in type(m).__name__)
        return {"works": n > 0, "result": f"prepared; {n} fake-quantize modules inserted"}
    except Exception as err:  # noqa: BLE001 - the error is the finding
        return {"works": False, "result": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


_PT2E_ATTEMPTS = (
    "CoreMLQuantizer, as shipped",
    "CoreMLQuantizer, torch.ao PT2E modules aliased to torchao's",
    "LinearQuantizer (torch.fx) on the nn.Module",
    "LinearQuantizer (torch.fx) on torch.export(...).module()",
    "coreai-opt W8A8 (graph mode), finalize(CoreML), ct.convert",
)


def pt2e_coremltools(log: Callable[[str], None] | None = None) -> dict:
    """What coremltools' own activation-quantization routes from PyTorch do with this model today.

    Each attempt runs in a fresh interpreter (one aliases modules in ``sys.modules``):
    ``CoreMLQuantizer`` (coremltools' PT2E quantizer) as shipped and with the PT2E modules that
    torch 2.11 removed from ``torch.ao`` aliased to torchao's copies; ``LinearQuantizer``
    (torch.fx) on the model and on its ``torch.export`` graph; and coreai-opt's W8A8 (whose
    graph mode *is* torchao's PT2E) finalized for Core ML and converted by ``ct.convert``.
    """
    import subprocess

    log = log or (lambda _: None)
    out = []
    for name in _PT2E_ATTEMPTS:
        code = ("import json, sys, warnings; warnings.simplefilter('ignore'); import torch; torch.set_num_threads(1); "
                "from ane_vit.coreai.optimize import _pt2e_attempt; "
                f"print('ANE_VIT_JSON ' + json.dumps(_pt2e_attempt({name!r})))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ANE_VIT_JSON ")), None)
        result = json.loads(line.removeprefix("ANE_VIT_JSON ")) if line else {
            "works": False, "result": f"the attempt crashed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
        out.append({"attempt": name, **result})
        log(f"PT2E, {name}: {result['result']}")
    return {"what": "coremltools 9.0's routes to activation quantization in PyTorch, with torch 2.13 (see notes)",
            "attempts": out}


# --------------------------------------------------------------------------- table and command line


def _pct(row: dict) -> str:
    low, high = row["wilson_95"]
    return f"{100 * row['accuracy']:.2f} ({100 * low:.1f}-{100 * high:.1f})"


def markdown_table(results: dict) -> str:
    """The rows as a Markdown table for chapter 10: Core AI next to chapter 8's coremltools row.

    Sizes in kB (10^3 bytes); accuracy in % with its 95 % Wilson interval; "= fp32": share of
    labels equal to PyTorch float32's.

    Raises:
        ValueError: if ``results`` has no ``rows``.
    """
    rows = results.get("rows") if isinstance(results, dict) else None
    if not rows:
        raise ValueError("results must be the dict of results/coreai_compression_digits.json (with 'rows')")
    n = results["split"]["n_test"]
    lines = [f"| method | Core AI kB | smaller than Core AI fp16 | Core AI accuracy % (95 % CI), {n} images | Core AI = fp32 "
             "| coremltools kB | coremltools accuracy % (95 % CI) | coremltools = fp32 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "" if r.get("ratio_to_float16") is None else f"{r['ratio_to_float16']:.2f}x"
        ct = r.get("coremltools")
        ct_cells = " | | " if ct is None else \
            f"{ct['bytes'] / 1e3:.0f} | {_pct(ct)} | {100 * ct['agreement_with_fp32']:.1f} %"
        lines.append(f"| {r['method']} | {r['bytes'] / 1e3:.0f} | {ratio} | {_pct(r)} | "
                     f"{100 * r['agreement_with_fp32']:.1f} % | {ct_cells} |")
    return "\n".join(lines)


def _refresh_coremltools(results: dict, digits: dict) -> dict:
    for r in results["rows"]:
        r["coremltools"] = _coremltools_row(digits, METHODS[r["method"]].coremltools_stage if r["method"] in METHODS
                                            else (r.get("coremltools") or {}).get("stage"))
    return results


def _dumps(results: dict) -> str:
    """JSON with one line per flat list or flat object (labels, intervals, per-quantizer records)."""

    def encode(value, indent: str) -> str:
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if items is None or not any(isinstance(v, (dict, list)) for v in items):
            return json.dumps(value)
        inner = indent + " "
        if isinstance(value, dict):
            body = [f"{inner}{json.dumps(k)}: {encode(v, inner)}" for k, v in value.items()]
            return "{\n" + ",\n".join(body) + f"\n{indent}}}"
        return "[\n" + ",\n".join(f"{inner}{encode(v, inner)}" for v in value) + f"\n{indent}]"

    return encode(results, "") + "\n"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ane_vit.coreai.optimize",
        description="coreai-opt compression of the digits model (palettization, int8, W8A8), converted to Core AI "
                    f"programs and run by Apple's runtime; writes {RESULTS_FILE}.")
    parser.add_argument("--output", default=RESULTS_FILE, metavar="FILE", help=f"JSON file (default: {RESULTS_FILE})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                        help="rows to run, by name (default: all): " + "; ".join(f"'{m}'" for m in METHODS))
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="a stratified subset of N test images (N // 10 per class) instead of all 360")
    parser.add_argument("--digits-json", default="results/digits.json", metavar="FILE",
                        help="chapter 8's results, the coremltools rows (default: results/digits.json)")
    parser.add_argument("--work-dir", default=None, metavar="DIR", help="keep the .aimodel programs there")
    parser.add_argument("--no-study", action="store_true", help="skip the W8A8 study (six graph-mode calibrations)")
    parser.add_argument("--no-pt2e", action="store_true", help="skip the record of coremltools' PT2E routes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--refresh-coremltools", action="store_true",
                        help="only re-copy the coremltools rows of an existing --output from --digits-json (seconds)")
    parser.add_argument("--markdown", action="store_true", help="only print the table of an existing --output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m ane_vit.coreai.optimize [options]``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars of coremltools / coreai-opt, read when tqdm loads
    parser = _build_parser()
    args = parser.parse_args(argv)
    output = Path(args.output)
    if args.markdown or args.refresh_coremltools:
        if not output.is_file():
            parser.error(f"--output {output} does not exist: run without --markdown/--refresh-coremltools first")
        results = json.loads(output.read_text())
        if args.refresh_coremltools:
            try:
                results = _refresh_coremltools(results, _load_digits_json(args.digits_json))
            except (ValueError, FileNotFoundError) as err:
                parser.error(str(err))
            output.write_text(_dumps(results))
        print(markdown_table(results))
        return 0
    if output.exists() and not args.overwrite:
        parser.error(f"{output} already exists; pass --overwrite to replace it")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        results = evaluate(methods=args.methods, limit=args.limit, work_dir=args.work_dir, digits_json=args.digits_json,
                           study=not args.no_study, pt2e=not args.no_pt2e, log=lambda line: print(line, flush=True))
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    results["provenance"] = {
        "command": " ".join(["python -m ane_vit.coreai.optimize", *argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared; no timing recorded)",
        "python": platform.python_version(),
        "threads": args.threads,
        "versions": _versions(),
        "runtime": "Apple's Core AI runtime, Linux x86-64 build (CPU reference), via coreai.authoring AIModelAsset.executable",
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(_dumps(results))
    print(markdown_table(results))
    print(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

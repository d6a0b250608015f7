"""Compression with fine-tuning: prune or palettize the digits model while training, then convert.

Post-training compression of the digits program keeps the accuracy down to 4 bits, but 2-bit
tables and every pruning destroy it (chapter 8). The standard fix is to compress *while*
fine-tuning, with ``coremltools.optimize.torch``: ``MagnitudePruner`` (unstructured 50 % or
2:4, sparsity raised gradually by a polynomial schedule) and ``DKMPalettizer`` (differentiable
k-means, Cho et al. 2022). Each run starts from the shipped weights, fine-tunes a few epochs on
one CPU thread with the recipe of ``ane_vit.digits.train``, then goes through the same path as
every post-training row: port to the ANE model, export a float16 program (iOS16), compress it
with ``ane_vit.compress`` and evaluate it with ``ane_vit.interpret`` on the 360 test images.

**Batch norms are folded before fine-tuning.** The converter folds each batch norm that follows
a conv into the conv's weights, one scale per output channel (and the ANE model folds the
MBConv pre-norm into the expand conv, one scale per input channel). A table of four values
learned on the unfolded weight would come out of conversion as up to four values *per
channel*, which a per-tensor 2-bit table cannot hold. ``fold_batch_norms`` therefore folds
them into the convs first and leaves each batch norm as an identity plus a bias
(``weight = 1``, ``running_mean = 0``, ``running_var = 1 - eps``); during fine-tuning the batch
norms stay in eval mode with their scale frozen (their bias trains). The same folded model is
fine-tuned for every method, so the rows differ only by the compression.

Which weights: those the program compresses at coremltools' default threshold, i.e. convs and
linears with more than 2,048 weights (``WEIGHT_THRESHOLD``); the others stay float16 in both
the post-training and the fine-tuned rows.

``finetune`` runs one method; ``finetune_rows`` runs several and evaluates their programs
(``python -m ane_vit.digits finetune`` -> ``results/digits_finetune.json``).
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import load_data
from .model import ARCH, build_digits_model, load_model

__all__ = ["FINETUNE_METHODS", "fold_batch_norms", "compressible_modules", "finetune", "finetune_rows"]

#: The fine-tuned compressions, name -> (coremltools.optimize.torch algorithm, its settings).
FINETUNE_METHODS: dict[str, tuple[str, dict]] = {
    "prune 50 %": ("prune", {"target_sparsity": 0.5}),
    "prune 2:4": ("prune", {"n_m_ratio": (2, 4)}),
    "palettize 2 bit": ("palettize", {"n_bits": 2}),
}
#: Same as coremltools' default ``weight_threshold``: only weights with more elements are compressed.
WEIGHT_THRESHOLD = 2048


def _identity_with_bias_(bn: nn.BatchNorm2d, bias: torch.Tensor) -> None:
    """Make ``bn`` compute ``x + bias`` in eval mode (scale exactly 1 up to float32 rounding)."""
    bn.weight.fill_(1.0)
    bn.bias.copy_(bias)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(1 - eps + eps) * 1 + bias


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C,): bn(x) = x * scale + shift in eval
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every MBConv's batch norms into its convs, in place; returns ``model`` (same function in eval).

    In each MBConv: the pre-norm goes into the expand conv's input channels (its shift becomes a
    bias carried by ``expand_norm``), and ``expand_norm``, ``depthwise_norm``, ``project_norm``
    go into the conv before them. Each batch norm is left as an identity plus bias. The stem's
    batch norm sits *before* a padded 3x3 conv (not foldable exactly) and stays as it is.

    Shapes: unchanged (``x: (B, 3, 64, 64) -> (B, 10)`` for the digits model).
    """
    from ..layers import MBConv

    for block in model.modules():
        if not isinstance(block, MBConv):
            continue
        if block.expand is None:
            continue  # not in the digits model: the pre-norm would have no conv to go into
        pre_scale, pre_shift = _bn_scale_shift(block.pre_norm)  # (C_in,)
        w = block.expand.weight  # (hidden, C_in, 1, 1)
        carried = (w.flatten(1) * pre_shift).sum(dim=1)  # (hidden,): expand(pre_shift)
        w.mul_(pre_scale.reshape(1, -1, 1, 1))
        _identity_with_bias_(block.pre_norm, torch.zeros_like(pre_shift))
        scale, shift = _bn_scale_shift(block.expand_norm)  # (hidden,)
        w.mul_(scale.reshape(-1, 1, 1, 1))
        _identity_with_bias_(block.expand_norm, shift + carried * scale)
        for conv, bn in ((block.depthwise, block.depthwise_norm), (block.project, block.project_norm)):
            scale, shift = _bn_scale_shift(bn)
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))  # (C_out, ...) scaled per output channel
            _identity_with_bias_(bn, shift)
    return model


def compressible_modules(model: nn.Module, weight_threshold: int = WEIGHT_THRESHOLD) -> list[str]:
    """Names of the ``nn.Conv2d`` / ``nn.Linear`` modules whose weight has more than ``weight_threshold`` elements."""
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() > weight_threshold]


def _freeze_batch_norms(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            m.weight.requires_grad_(False)


def _optimizer_for(method: str, settings: dict, model: nn.Module, names: list[str], total_steps: int):
    """The coremltools.optimize.torch algorithm for ``method``, configured for the modules ``names``."""
    if method == "prune":
        from coremltools.optimize.torch.pruning import (
            MagnitudePruner,
            MagnitudePrunerConfig,
            ModuleMagnitudePrunerConfig,
            PolynomialDecayScheduler,
        )

        # sparsity raised in 10 steps over the first 60 % of training, then held (Zhu & Gupta 2017)
        ramp = max(10, int(0.6 * total_steps))
        scheduler = PolynomialDecayScheduler(update_steps=list(range(0, ramp, max(1, ramp // 10))))
        module = ModuleMagnitudePrunerConfig(scheduler=scheduler, **settings)
        config = MagnitudePrunerConfig(module_name_configs={n: module for n in names})
        return MagnitudePruner(model, config)
    if method == "palettize":
        from coremltools.optimize.torch.palettization import (
            DKMPalettizer,
            DKMPalettizerConfig,
            ModuleDKMPalettizerConfig,
        )

        module = ModuleDKMPalettizerConfig(granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD, **settings)
        config = DKMPalettizerConfig(module_name_configs={n: module for n in names})
        return DKMPalettizer(model, config)
    raise ValueError(f"method must be 'prune' or 'palettize', got {method!r}")


def finetune(
    method: str,
    settings: dict,
    epochs: int = 6,
    lr: float = 5e-4,
    seed: int = 0,
    batch_size: int = 64,
    max_shift: int = 4,
    threads: int = 1,
    weights: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, dict]:
    """Fine-tune the (folded) digits reference model while compressing it; returns ``(model, record)``.

    ``method`` is ``"prune"`` (``settings``: ``target_sparsity`` or ``n_m_ratio``) or
    ``"palettize"`` (``settings``: ``n_bits``). The model returned is the finalized float32
    reference model (compressed weights written in, batch norms folded), in eval mode; the
    record holds the settings, the time, the versions and the float32 test accuracy.

    Shapes: the model maps ``x: (N, 3, 64, 64) -> (N, 10)``.

    Raises:
        ValueError: an unknown method, or non-positive ``epochs``, ``batch_size``, ``threads`` or ``lr``.
    """
    from .train import accuracy, random_shift

    if method not in ("prune", "palettize"):
        raise ValueError(f"method must be 'prune' or 'palettize', got {method!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    torch.manual_seed(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test = load_data()
    model = fold_batch_norms(load_model("reference", weights))
    start_accuracy = accuracy(model, x_test, y_test)
    names = compressible_modules(model)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total = epochs * steps_per_epoch
    algorithm = _optimizer_for(method, settings, model, names, total)
    start, cpu_start = time.perf_counter(), time.process_time()
    history = []
    try:
        prepared = algorithm.prepare(inplace=True)
        optimizer = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=0.1)
        for epoch in range(epochs):
            prepared.train()
            _freeze_batch_norms(prepared)
            order = torch.randperm(len(x_train), generator=generator)
            running = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * batch_size:(step + 1) * batch_size]
                xb = random_shift(x_train[idx], max_shift, generator)
                loss = F.cross_entropy(prepared(xb), y_train[idx], label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                algorithm.step()
                running += loss.item() * len(idx)
            entry = {"epoch": epoch + 1, "train_loss": running / len(x_train),
                     "test_accuracy_while_training": accuracy(prepared, x_test, y_test)}
            history.append(entry)
            if log is not None:
                log(f"{method} {settings}: epoch {epoch + 1}/{epochs}, loss {entry['train_loss']:.4f}, "
                    f"test accuracy {entry['test_accuracy_while_training']:.4f}")
        finalized = algorithm.finalize(inplace=True)
    finally:
        torch.set_num_threads(previous_threads)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    # a clean reference model with the finalized weights (drops coremltools' metadata buffers)
    clean = build_digits_model("reference")
    state = {k: v for k, v in finalized.state_dict().items() if k in clean.state_dict()}
    clean.load_state_dict(state)
    clean.eval()
    from ..export.metadata import _dist_version

    record = {
        "algorithm": {"prune": "coremltools.optimize.torch MagnitudePruner (PolynomialDecayScheduler)",
                      "palettize": "coremltools.optimize.torch DKMPalettizer (per tensor)"}[method],
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "modules": names,
        "start": "shipped weights (ane_vit/data/digits_micro_moat.pt), batch norms folded" if weights is None
                 else f"{weights}, batch norms folded",
        "epochs": epochs, "seed": seed, "batch_size": batch_size, "threads": threads,
        "optimizer": {"name": "AdamW", "lr": lr, "weight_decay": 0.0, "schedule": "one-cycle, 10 % warm-up"},
        "loss": "cross-entropy, label smoothing 0.1",
        "augmentation": f"random shift up to {max_shift} px",
        "batch_norm": "folded into the convs before fine-tuning; eval mode, scale frozen, bias trained",
        "history": history,
        "pytorch_fp32_accuracy_before": start_accuracy,
        "pytorch_fp32_accuracy": accuracy(clean, x_test, y_test),
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
        "versions": {"torch": torch.__version__, "coremltools": _dist_version("coremltools"),
                     "numpy": np.__version__},
    }
    return clean, record


def _store_zeros_sparse(program, family: str, params: dict):
    """Store the weights that fine-tuning left at least a quarter zero in the sparse format, zeros exactly.

    ``OpThresholdPrunerConfig(threshold=1e-12)`` zeroes only values that are already 0 in
    float16 (its smallest magnitude is 6e-8), so nothing the fine-tuning kept is removed.
    """
    import coremltools.optimize.coreml as cto

    from .. import compress

    op = cto.OpThresholdPrunerConfig(threshold=1e-12, minimum_sparsity_percentile=0.25, weight_threshold=WEIGHT_THRESHOLD)
    return compress.methods._run(cto.prune_weights, compress.methods._load(program), cto.OptimizationConfig(global_config=op),
                                 family, params, {"threshold": "zeros left by fine-tuning, stored exactly", "fine_tuned": True})


def _distinct_values(program) -> int:
    """The largest number of distinct values among the program's palettized weights (its table size in use)."""
    from ..interpret import load_program

    most = 0
    for op in load_program(program).functions["main"].operations:
        if op.op_type == "constexpr_lut_to_dense":
            most = max(most, int(np.unique(np.asarray(op.materialized_val_inference(), np.float32)).size))
    return most


def finetune_rows(
    methods: dict[str, tuple[str, dict]] | None = None,
    epochs: int = 6,
    lr: float = 5e-4,
    seed: int = 0,
    threads: int = 1,
    limit: int | None = None,
    work_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Fine-tune, convert, compress and evaluate each method; returns a JSON-ready dict with provenance.

    Each row has the fields of a compressed row of ``results/digits.json`` (``stage``,
    ``accuracy``, ``agreement_with_fp32``, ``errors``, ``bytes``, ``ratio_to_fp16``, ``method``,
    ``minimum_target``, ``settings``, ``labels``) and ``fine_tuning`` (the training record).
    ``ratio_to_fp16`` divides by the size of the shipped model's float16 program.

    Args:
        methods: name -> (algorithm, settings), default ``FINETUNE_METHODS``.
        epochs, lr, seed, threads: the fine-tuning (see ``finetune``).
        limit: evaluate the programs on ``stratified_subset`` with ``limit // 10`` images per class.
        work_dir: keep the programs there (default: a temporary folder).
        log: called with progress lines.
    """
    from .. import __version__, compress
    from ..export.metadata import _dist_version, package_nbytes
    from ..port.moat import port_moat_weights
    from .evaluate import (
        _row,
        export_digits,
        label_string,
        limited_split,
        predict,
        predict_program,
    )

    methods = FINETUNE_METHODS if methods is None else methods
    log = log or (lambda _: None)
    _, _, x, y = load_data()
    x, y = limited_split(x, y, limit)
    fp32 = predict(load_model("reference"), x)
    tmp = tempfile.TemporaryDirectory() if work_dir is None else None
    folder = Path(tmp.name if tmp else work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    start = time.perf_counter()
    try:
        fp16_bytes = package_nbytes(export_digits(load_model("ane"), folder / "digits_fp16_shipped.mlpackage", overwrite=True))
        for name, (method, settings) in methods.items():
            model, record = finetune(method, settings, epochs=epochs, lr=lr, seed=seed, threads=threads, log=log)
            ane = port_moat_weights(model, build_digits_model("ane")).eval()
            slug = name.replace(" ", "_").replace("%", "pct").replace(":", "-")
            source = export_digits(ane, folder / f"digits_finetuned_{slug}_fp16.mlpackage", overwrite=True)
            if method == "prune":
                family = "prune-n:m" if "n_m_ratio" in settings else "prune"
                params = ({"n": settings["n_m_ratio"][0], "m": settings["n_m_ratio"][1]} if family == "prune-n:m"
                          else {"sparsity": float(settings["target_sparsity"])})
                out = _store_zeros_sparse(source, family, params)
            else:
                out = compress.palettize(source, settings["n_bits"])
                family = "palettize"
            path = folder / f"digits_finetuned_{slug}.mlpackage"
            out.save(str(path))
            extra = {"bytes": package_nbytes(path), "method": family, "minimum_target": compress.METHOD_TARGETS[family],
                     "settings": record["settings"], "fine_tuned": True}
            extra["ratio_to_fp16"] = fp16_bytes / extra["bytes"]
            if method == "prune":
                extra["sparsity"] = compress.weight_sparsity(out)
            else:
                extra["distinct_values_per_weight"] = _distinct_values(out)
            record["pytorch_fp32_labels"] = label_string(predict(model, x))
            rows.append(_row(f"program {name}, fine-tuned", predict_program(out, x), y, fp32, **extra, fine_tuning=record))
            log(f"program {name}, fine-tuned: {rows[-1]['accuracy']:.4f}, {extra['bytes'] / 1e3:.0f} kB")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {
        "model": ARCH,
        "split": {"n_test": len(y), "subset": limit is not None, "seed": 0, "test_fraction": 0.2, "labels": label_string(y)},
        "fp16_bytes": fp16_bytes,
        "rows": rows,
        "provenance": {
            "what": "fine-tuned compression of the digits model; programs run by ane_vit.interpret (numpy), not by Core ML",
            "machine": f"{platform.system()} {platform.machine()}",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - start, 1),
            "command": "python -m ane_vit.digits finetune",
            "versions": {"torch": torch.__version__, "coremltools": _dist_version("coremltools"), "numpy": np.__version__,
                         "scikit-learn": _dist_version("scikit-learn"), "ane_vit": __version__},
        },
    }

"""Train the digits micro-moat on a CPU in a few minutes (``python -m ane_vit.digits train``).

Recipe: the plain reference model (``ane_vit.digits.build_digits_model("reference")``),
AdamW (lr 2e-3, weight decay 0.05), a one-cycle schedule, cross-entropy with label smoothing
0.1, batches of 64, random shifts of up to 4 pixels (half a pixel of the 8x8 original).

Batch-norm momentum: the MBConv layers copy the seed's TensorFlow setting (momentum 0.99 in
TF's convention = 0.01 in PyTorch's). After a short run the running statistics are then
still far from the data and the model is at chance in eval mode. Training here sets every
batch norm's momentum to 0.1, and after the last epoch recomputes the statistics as a plain
average over the (un-augmented) training set; both are recorded in the training record. The
momentum is put back to the seed's value before the weights are saved (it is not a weight).
"""

from __future__ import annotations

import math
import numbers
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import load_data
from .model import ARCH, build_digits_model

__all__ = ["TRAIN_MOMENTUM", "random_shift", "recompute_batch_norm", "accuracy", "train"]

#: Batch-norm momentum (PyTorch's convention) used while training.
TRAIN_MOMENTUM = 0.1


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in each direction, filling with -1 (background).

    Shapes: ``x: (N, C, H, W) -> (N, C, H, W)``
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # (N, C, H+2s, W+2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> nn.Module:
    """Replace every batch norm's running statistics by their average over ``x``; returns ``model``.

    Momentum ``None`` makes PyTorch keep a cumulative average; the old momenta are restored.
    """
    norms = _batch_norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(x), batch_size):
        model(x[i:i + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> float:
    """Top-1 accuracy (0..1) of ``model`` in eval mode. Shapes: ``x: (N, 3, 64, 64)``, ``y: (N,)``."""
    model.eval()
    preds = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    return float((preds == y).double().mean())


def train(
    epochs: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 2e-3,
    max_shift: int = 4,
    threads: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict, dict]:
    """Train the digits micro-moat; returns ``(state_dict, record)``.

    ``state_dict`` is the reference model's (float32); ``record`` holds the settings, the
    time, the versions and the train/test accuracy (reference model, float32, eval mode).
    Seeded: the same seed and thread count give the same weights on the same machine.
    ``data``: ``(x_train, y_train, x_test, y_test)`` to train and test on instead of
    ``load_data()`` (cross-validation folds, ``ane_vit.digits.crossval``).

    Raises:
        ValueError: for non-positive ``epochs``, ``batch_size``, ``threads`` or ``lr``, a
            ``batch_size`` larger than the training split (1,437 images: every step would be
            the whole split, and the record would claim a batch that never ran) or a negative
            ``max_shift``.
        FloatingPointError: if the loss becomes NaN or inf (training diverged: lower ``lr``);
            nothing is returned, so no diverged weights can be saved.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0 (pixels), got {max_shift!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    from tqdm.auto import tqdm

    x_train, y_train, x_test, y_test = load_data() if data is None else data
    if batch_size > len(x_train):
        raise ValueError(f"batch_size must be at most the {len(x_train)} training images, got {batch_size}")
    torch.manual_seed(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    model = build_digits_model("reference", batch=batch_size)
    seed_momenta = [m.momentum for m in _batch_norms(model)]
    for m in _batch_norms(model):
        m.momentum = TRAIN_MOMENTUM
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    history = []
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            total = 0.0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
            for step in bar:
                idx = order[step * batch_size:(step + 1) * batch_size]
                xb = random_shift(x_train[idx], max_shift, generator)
                loss = F.cross_entropy(model(xb), y_train[idx], label_smoothing=0.1)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training diverged: the loss is {loss.item()} at epoch {epoch + 1}, "
                                             f"step {step + 1}, lr {lr}; lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(idx)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            entry = {"epoch": epoch + 1, "train_loss": total / len(x_train), "test_accuracy": accuracy(model, x_test, y_test)}
            history.append(entry)
            if log is not None:
                log(f"epoch {epoch + 1}/{epochs}: loss {entry['train_loss']:.4f}, test accuracy {entry['test_accuracy']:.4f}")
        recompute_batch_norm(model, x_train)
    finally:
        torch.set_num_threads(previous_threads)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    for m, momentum in zip(_batch_norms(model), seed_momenta):
        m.momentum = momentum
    from ..export.metadata import _dist_version

    record = {
        "model": ARCH,
        "kind": "reference",
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "optimizer": {"name": "AdamW", "lr": lr, "weight_decay": 0.05, "schedule": "one-cycle"},
        "loss": "cross-entropy, label smoothing 0.1",
        "augmentation": f"random shift up to {max_shift} px",
        "batch_norm": f"momentum {TRAIN_MOMENTUM} while training, then statistics recomputed over the training split",
        "threads": threads,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "machine": f"{platform.system()} {platform.machine()} ({platform.processor() or 'unknown cpu'})",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": _dist_version("numpy"),
            "scikit-learn": _dist_version("scikit-learn"),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "history": history,
        "train_accuracy": accuracy(model, x_train, y_train),
        "test_accuracy": accuracy(model, x_test, y_test),
        "n_train": len(x_train),
        "n_test": len(x_test),
    }
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, record

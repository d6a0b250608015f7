"""Cross-validated accuracy of the digits recipe over all 1,797 images (``python -m ane_vit.digits crossval``).

The shipped model is tested on 360 images: one image is 0.28 points and the 95 % interval of
its accuracy is about two points wide. More test images give a sharper estimate, and k-fold
cross-validation uses every image once as a test image: split the 1,797 digits into ``k``
stratified folds, train a model on ``k - 1`` of them exactly like the shipped one
(``ane_vit.digits.train``: same epochs, optimizer, augmentation and batch-norm handling), and
predict the held-out fold. The pooled accuracy over 1,797 predictions, with its Wilson
interval, estimates what *the recipe* reaches on unseen digits; the shipped model is one draw
from it. Everything runs on the float32 reference model in PyTorch (no conversion).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["crossval"]


def crossval(
    folds: int = 5,
    epochs: int = 12,
    seed: int = 0,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``folds`` models on stratified folds of all the digits and pool their held-out predictions.

    Returns a JSON-ready dict: per fold (test size, accuracy, training record without its
    history), the pooled accuracy with its Wilson and exact intervals, the predicted labels of
    every image (one character each, in ``load_digits`` order) and the provenance.

    Raises:
        ValueError: ``folds`` not an int in 2..20, or bad training settings (see ``train``).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold

    from .. import __version__
    from ..export.metadata import _dist_version
    from ..stats import exact_interval, wilson_interval
    from .data import to_model_input
    from .evaluate import label_string, predict
    from .model import build_digits_model
    from .train import train

    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= 20:
        raise ValueError(f"folds must be an int in 2..20, got {folds!r}")
    digits = load_digits()
    x_all = to_model_input(digits.images)  # (1797, 3, 64, 64)
    y_all = torch.from_numpy(digits.target.astype(np.int64))  # (1797,)
    predicted = torch.full_like(y_all, -1)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = []
    start = time.perf_counter()
    for k, (idx_train, idx_test) in enumerate(splitter.split(np.zeros(len(y_all)), digits.target)):
        tr, te = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
        state, record = train(epochs=epochs, seed=seed + k, threads=threads, progress=False,
                              data=(x_all[tr], y_all[tr], x_all[te], y_all[te]))
        model = build_digits_model("reference")
        model.load_state_dict(state)
        predicted[te] = predict(model.eval(), x_all[te])
        correct = int((predicted[te] == y_all[te]).sum())
        record.pop("history", None)
        rows.append({"fold": k, "n_test": len(te), "correct": correct, "accuracy": correct / len(te), "training": record})
        if log is not None:
            log(f"fold {k + 1}/{folds}: {correct}/{len(te)} = {correct / len(te):.4f} "
                f"({record['wall_seconds']} s wall, {record['cpu_seconds']} s CPU)")
    n = len(y_all)
    correct = int((predicted == y_all).sum())
    import sklearn

    return {
        "model": "micro-moat, float32 reference (PyTorch)",
        "recipe": "ane_vit.digits.train defaults (the shipped model's recipe), one model per fold",
        "folds": folds,
        "split": "sklearn StratifiedKFold(shuffle=True, random_state=seed); fold k trains with seed + k",
        "n": n,
        "correct": correct,
        "accuracy": correct / n,
        "wilson_95": list(wilson_interval(correct, n)),
        "exact_95": list(exact_interval(correct, n)),
        "per_fold": rows,
        "labels": label_string(predicted),
        "true_labels": label_string(y_all),
        "provenance": {
            "machine": f"{platform.system()} {platform.machine()}",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - start, 1),
            "command": f"python -m ane_vit.digits crossval --folds {folds} --epochs {epochs} --seed {seed}",
            "versions": {"torch": torch.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__,
                         "coremltools": _dist_version("coremltools"), "ane_vit": __version__},
        },
    }

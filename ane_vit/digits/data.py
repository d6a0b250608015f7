"""The digits data set, model-ready: scikit-learn's 8x8 handwritten digits at 64x64.

scikit-learn ships the UCI optical-recognition digits inside its wheel (1,797 grey images of
8x8 pixels with values 0..16, ten classes, BSD-3): nothing is downloaded. ``load_data`` splits
them with a fixed seed, stratified by class, and turns each image into the input a MOAT for
64x64 images takes. See ``notebooks/08_real_data_and_compression.ipynb``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMAGE_SIZE", "NUM_CLASSES", "SPLIT_SEED", "TEST_FRACTION", "PIXEL_MAX", "to_model_input", "load_data"]

#: Height and width of the model input.
IMAGE_SIZE = 64
#: Ten digits, 0..9.
NUM_CLASSES = 10
#: Seed of the train/test split (fixed: every stage of chapter 8 is measured on the same images).
SPLIT_SEED = 0
#: Share of the images held out for testing (stratified: 360 test images, 35-37 per class).
TEST_FRACTION = 0.2
#: The digits' largest pixel value (4x4 blocks of a 32x32 bitmap, counted: 0..16).
PIXEL_MAX = 16.0


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Turn 8x8 digit images (pixel values 0..16) into the model's input.

    Three steps: divide by 16 (pixels to [0, 1]); upsample bilinearly to 64x64
    (``align_corners=False``); map to [-1, 1] with ``(x - 0.5) / 0.5`` and repeat the grey
    channel three times (the MOAT stem takes RGB).

    Shapes: ``images: (N, 8, 8)`` or ``(N, 64)`` -> ``(N, 3, 64, 64)`` float32.

    Raises:
        ValueError: if the images are not ``(N, 8, 8)`` / ``(N, 64)``.
    """
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.dim() == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 8, 8)  # (N, 64) -> (N, 8, 8)
    if x.dim() != 3 or tuple(x.shape[1:]) != (8, 8):
        raise ValueError(f"images must have shape (N, 8, 8) or (N, 64), got {tuple(x.shape)}")
    x = (x / PIXEL_MAX).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)  # (N, 1, 64, 64)
    x = (x - 0.5) / 0.5  # [-1, 1]
    return x.expand(-1, 3, -1, -1).contiguous()  # (N, 1, 64, 64) -> (N, 3, 64, 64): grey as RGB


def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits, split and model-ready: ``(x_train, y_train, x_test, y_test)``.

    The split is scikit-learn's ``train_test_split`` with ``test_size=TEST_FRACTION`` (0.2),
    ``random_state=SPLIT_SEED`` (0) and ``stratify`` by label: 1,437 training and 360 test
    images (35-37 per class), the same every time. Images go through ``to_model_input`` (pixels / 16,
    bilinear upsampling to 64x64, ``(x - 0.5) / 0.5``, grey repeated to 3 channels).

    Shapes: ``x_*: (N, 3, 64, 64)`` float32 in [-1, 1]; ``y_*: (N,)`` int64 in 0..9.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx_train, idx_test = train_test_split(
        np.arange(len(digits.target)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=digits.target
    )
    images, labels = digits.images, digits.target.astype(np.int64)
    return (
        to_model_input(images[idx_train]),
        torch.from_numpy(labels[idx_train]),
        to_model_input(images[idx_test]),
        torch.from_numpy(labels[idx_test]),
    )

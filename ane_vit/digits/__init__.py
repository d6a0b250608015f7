"""A MOAT that does its job: the digits, a micro-moat trained on them, accuracy at every stage.

* ``data``: ``load_data`` (scikit-learn's digits, shipped in its wheel, split and upsampled
  to model-ready 64x64 inputs) and ``to_model_input``;
* ``model``: ``load_model`` (the trained micro-moat, ANE layout or reference, with the
  weights that ship in ``ane_vit/data/``), ``load_state`` (a weights file, checked) and
  ``build_digits_model``;
* ``train``: the training recipe (``python -m ane_vit.digits train``);
* ``evaluate``: accuracy of reference fp32, ANE fp32, ANE fp16, the converted program and
  each compressed program (``python -m ane_vit.digits evaluate`` -> ``results/digits.json``);
* ``finetune``: pruning and palettization while fine-tuning (``coremltools.optimize.torch``),
  then the same conversion and evaluation (``... finetune`` -> ``results/digits_finetune.json``);
* ``crossval``: k-fold accuracy of the training recipe over all 1,797 digits
  (``... crossval`` -> ``results/digits_crossval.json``);
* ``threshold``: where a small program's bytes go and what compressing the constants under
  coremltools' threshold costs (``... threshold`` -> ``results/digits_threshold.json``);
* ``report``: each evaluated row with its 95 % interval and exact paired test (``ane_vit.stats``).

scikit-learn and coremltools are imported inside the functions that need them. See
``notebooks/08_real_data_and_compression.ipynb``.
"""

from __future__ import annotations

from .cli import main
from .data import IMAGE_SIZE, NUM_CLASSES, load_data, to_model_input
from .model import ARCH, build_digits_model, load_model, load_record, load_state

__all__ = [
    "ARCH",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "load_data",
    "to_model_input",
    "build_digits_model",
    "load_model",
    "load_state",
    "load_record",
    "main",
]

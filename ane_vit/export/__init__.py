"""Export PyTorch models to Core ML ML Programs (``.mlpackage``), and the export command line.

* ``to_mlprogram`` traces a module and converts it in memory (float16, fixed shapes).
* ``export_model`` does the same for one model and saves a ``.mlpackage`` with named
  inputs and outputs and metadata (the architecture config as JSON, the versions of
  ane_vit, torch and coremltools), refusing to overwrite an existing file silently.
* ``export_moat`` builds a MOAT model with ``ane_vit.moat.build_model`` and exports it under
  the seed's file-name scheme (``default_filename``).
* ``python -m ane_vit.export`` (``main``) exports what the seed's ``export.py`` exported;
  ``--deployment-target iOS18`` makes the programs that iOS18-only compressions need.
* ``enumerated_shapes=[...]`` (``--enumerated-sizes``) makes one program for several input
  sizes, for models whose layers do not depend on the token count (chapter 9).

Conversion runs on any OS (coremltools converts on Linux); running the program needs
macOS (see ``ane_vit.device``). ``coremltools`` is imported inside the functions so that
``import ane_vit`` stays fast. See ``notebooks/06_export_and_inspection.ipynb``.

Why ``iOS16`` (= ``macOS13``) is the default deployment target: an ML Program needs at
least iOS 15 / macOS 12, and iOS 16 added float16 model inputs and outputs. With this
target and float16 precision coremltools declares the inputs and outputs float16 (with
``iOS15`` they stay float32 and the program casts at both ends), so the data enters and
leaves in the ANE's own precision. Every device that runs iOS 16 / macOS 13 or later loads
it, which includes every device that runs a current OS release; a later target (``iOS17``
and up) would shut out devices that stopped at iOS 16 / macOS 13 without changing the ops
our models use. Image inputs (``image_input=True``) remain 8-bit RGB images.
"""

from __future__ import annotations

# The public face of the export family; the code lives in one module per concept:
#   convert   to_mlprogram: trace and convert in memory (float16, fixed shapes)
#   save      export_model, export_moat: convert and save a .mlpackage
#   metadata  what a package records about itself, and its size on disk
#   paths     file names (the seed's scheme), target and shape checks
#   shapes    several input sizes in one program: checks for enumerated shapes
#   cli       the command line (python -m ane_vit.export, run by __main__.py)
from .cli import main
from .convert import DEFAULT_DEPLOYMENT_TARGET, IMAGENET_MEAN, IMAGENET_STD, to_mlprogram
from .metadata import config_to_dict, package_nbytes, read_metadata
from .paths import (
    DEPLOYMENT_TARGETS,
    default_filename,
    deployment_target,
    enumerated_filename,
    moat_filename,
)
from .save import export_moat, export_model, resolve_target, save_program
from .shapes import MAX_ENUMERATED_SHAPES

__all__ = [
    "DEFAULT_DEPLOYMENT_TARGET",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_mlprogram",
    "export_model",
    "export_moat",
    "save_program",
    "resolve_target",
    "default_filename",
    "enumerated_filename",
    "moat_filename",
    "deployment_target",
    "DEPLOYMENT_TARGETS",
    "MAX_ENUMERATED_SHAPES",
    "config_to_dict",
    "read_metadata",
    "package_nbytes",
    "main",
]

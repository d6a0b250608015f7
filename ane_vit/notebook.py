"""Helpers for the book's notebooks: one set-up call and a way to show package source."""

from __future__ import annotations

import inspect
import os
import platform
import random
from importlib import metadata

__all__ = ["setup", "environment_report", "show_source"]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> str:
    """One line: OS, Python, and the versions of torch, coremltools and ane_vit."""
    from . import __version__

    return (
        f"{platform.system()} {platform.machine()} | Python {platform.python_version()} | "
        f"torch {_version('torch')} | coremltools {_version('coremltools')} | ane_vit {__version__}"
    )


def setup(seed: int = 0, quiet: bool = True) -> str:
    """Seed every RNG, apply the plot style, quiet third-party noise; print and return the environment line."""
    import numpy as np
    import torch

    from .plotting import apply_style

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")
        import logging
        import warnings

        logging.getLogger("coremltools").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="coremltools")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    apply_style()
    line = environment_report()
    print(line)
    return line


def show_source(obj) -> None:
    """Display the source of a package function or class, highlighted, in a notebook."""
    source = inspect.getsource(obj)
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{source}\n```"))
    except ImportError:  # plain Python
        print(source)

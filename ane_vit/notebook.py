"""Helpers for the book's notebooks: one set-up call and a way to show package source."""

from __future__ import annotations

import inspect
import json
import os
import platform
import random
from pathlib import Path

from ._versions import dist_version as _version

# Quiet progress bars (coremltools conversion) before anything imports tqdm.
os.environ.setdefault("TQDM_DISABLE", "1")

__all__ = ["setup", "environment_report", "show_source", "results_dir", "load_published_figures"]


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
    # two threads at most (the book's numbers were made so), fewer if OMP_NUM_THREADS says so:
    # the test run starts two kernels at once on two cores and sets it to 1
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1, int(wanted) if wanted.isdigit() and int(wanted) else 2)))
    if quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")
        import logging
        import warnings

        logging.getLogger("coremltools").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="coremltools")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    apply_style()
    line = environment_report()
    print(_fit(line))
    return line


def _fit(line: str, width: int = 75) -> str:
    """``line`` broken at its `` | `` separators into lines of at most ``width`` characters
    (a code cell's output column in the built book at 1280 px)."""
    rows: list[str] = []
    for part in line.split(" | "):
        if rows and len(rows[-1]) + 3 + len(part) <= width:
            rows[-1] += " | " + part
        else:
            rows.append(part)
    return "\n".join(rows)


def show_source(obj) -> None:
    """Display the source of a package function or class, highlighted, in a notebook."""
    source = inspect.getsource(obj)
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{source}\n```"))
    except ImportError:  # plain Python
        print(source)


def results_dir(start: str | os.PathLike | None = None) -> Path:
    """The repository's ``results/`` folder, found by walking up from ``start`` (default: the
    working directory), so a notebook finds it whether run by Jupyter, nbval or jupyter-book.

    Raises:
        FileNotFoundError: when no ``results/published_figures.json`` lies above ``start``.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "results" / "published_figures.json").is_file():
            return folder / "results"
    raise FileNotFoundError(
        f"no results/published_figures.json in {here} or above it: run the notebook from inside the ane-vit repository"
    )


def load_published_figures() -> dict:
    """The published figures the book quotes, each with its citation keys (``results/published_figures.json``)."""
    return json.loads((results_dir() / "published_figures.json").read_text())

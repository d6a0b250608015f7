"""Moved to :mod:`ane_vit.analysis.plots`; this name stays importable for existing code."""

from .analysis.plots import *  # noqa: F401,F403
from .analysis.plots import __all__  # noqa: F401

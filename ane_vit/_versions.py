"""The installed version of a distribution, for the provenance that results and packages record."""

from __future__ import annotations

from importlib import metadata

__all__ = ["dist_version"]


def dist_version(dist: str) -> str:
    """``dist``'s installed version (e.g. ``"2.13.0+cpu"`` for ``"torch"``), or ``"not installed"``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"

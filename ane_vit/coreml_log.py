"""Keep coremltools' "Failed to load _MLModelProxy" warnings out of our command lines.

On Linux (and anywhere without the Core ML runtime) ``import coremltools`` logs one
warning per native class it cannot load (``Failed to load _MLModelProxy: No module named
'coremltools.libcoremlpython'`` and five more). Conversion, saving and reading programs do
not use those classes; only prediction does, and it needs macOS anyway. Our command lines
call ``quiet_native_library_warnings`` before they import coremltools, so their output
starts with what they did. Library code does not call it: in your own code the warnings
stay visible (see the set-up page).

With the Core AI stack installed, coremltools also imports ``torchao`` (a coreai-opt
dependency), whose wheel carries CUDA kernels; on a machine without CUDA it logs one
``Failed to load .../torchao/_C....so`` warning per kernel library. Those records are
dropped the same way (``torchao`` logger, only that message).
"""

from __future__ import annotations

import logging

__all__ = ["quiet_native_library_warnings"]


class _NativeLibraryFilter(logging.Filter):
    """Drops coremltools' records about native Core ML classes it could not load, and
    torchao's about its CUDA kernel libraries."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name.startswith("torchao"):
            return not (message.startswith("Failed to load ") and "torchao" in message and ".so" in message)
        return not (message.startswith("Failed to load _ML") and "Proxy" in message)


def quiet_native_library_warnings() -> None:
    """Filter the "Failed to load _ML...Proxy" records of the ``coremltools`` logger and the
    "Failed to load .../torchao/_C*.so" records of the ``torchao`` logger (idempotent)."""
    for name in ("coremltools", "torchao"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NativeLibraryFilter) for f in logger.filters):
            logger.addFilter(_NativeLibraryFilter())

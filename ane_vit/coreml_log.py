"""Keep coremltools' "Failed to load _MLModelProxy" warnings out of our command lines.

On Linux (and anywhere without the Core ML runtime) ``import coremltools`` logs one
warning per native class it cannot load (``Failed to load _MLModelProxy: No module named
'coremltools.libcoremlpython'`` and five more). Conversion, saving and reading programs do
not use those classes; only prediction does, and it needs macOS anyway. Our command lines
call ``quiet_native_library_warnings`` before they import coremltools, so their output
starts with what they did. Library code does not call it: in your own code the warnings
stay visible (see the set-up page).
"""

from __future__ import annotations

import logging

__all__ = ["quiet_native_library_warnings"]


class _NativeLibraryFilter(logging.Filter):
    """Drops coremltools' records about native Core ML classes it could not load."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Failed to load _ML") and "Proxy" in message)


def quiet_native_library_warnings() -> None:
    """Filter the "Failed to load _ML...Proxy" records of the ``coremltools`` logger (idempotent)."""
    logger = logging.getLogger("coremltools")
    if not any(isinstance(f, _NativeLibraryFilter) for f in logger.filters):
        logger.addFilter(_NativeLibraryFilter())

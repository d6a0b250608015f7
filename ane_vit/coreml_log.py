"""Keep the Core ML stack's Linux noise out of our command lines.

A command line of ours prints what it did and what went wrong, nothing else. On Linux
(and anywhere without the Core ML runtime) importing and running coremltools prints lines
that say nothing about the user's run; each is dropped by our command lines, by exact
logger and message (anything else a library logs still shows):

* ``coremltools``: "Failed to load _MLModelProxy: No module named
  'coremltools.libcoremlpython'" and seven more like it, one per native class it cannot
  load. Conversion, saving and reading programs do not use those classes; only
  prediction does, and it needs macOS anyway.
* ``coremltools``: its version warnings, "Torch version 2.13.0+cpu has not been tested
  with coremltools..." and "scikit-learn version 1.9.1 is not supported... Disabling
  scikit-learn conversion API" (we never convert scikit-learn models; the versions in use
  are recorded in every program's metadata and results file).
* ``torchao`` (a coreai-opt dependency that coremltools imports): "Failed to load
  .../torchao/_C....so", one per CUDA kernel library, on a machine without CUDA.
* ``torch.utils._pytree``: "<enum 'KernelPreference'> is an Enum subclass and is now
  natively supported by torch.compile..." (torchao registers its enums the old way).
* tqdm progress bars of coremltools' conversion and compression passes ("Running MIL
  default pipeline: 42%|..."): dozens of lines per program, hidden. Setting
  ``TQDM_DISABLE=1`` cannot do this: torch imports tqdm (``torch.hub``) before any
  command line runs, and tqdm reads the variable when it is imported. A bar that asks
  explicitly (``disable=False``, like the digits training bar) still shows.

Our command lines call ``quiet_native_library_warnings`` before they import coremltools.
Library code does not call it: in your own code all of this stays visible (see the set-up
page).

Ctrl-C: coremltools imports its optional dependencies inside bare ``try: ... except:``
blocks (``coremltools/_deps``), so a Ctrl-C during ``import coremltools`` (seconds on
Linux) is swallowed and the command runs on and writes its files. Command lines that
convert call ``import_coremltools`` before the work: it holds Ctrl-C back during the import
and delivers it right after it (``KeyboardInterrupt``).
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import signal
import threading

__all__ = ["quiet_native_library_warnings", "import_coremltools"]

# logger name -> the messages dropped from it (matched from the start of the message)
_DROPPED = {
    "coremltools": re.compile(
        r"Failed to load _ML\w*Proxy\b"
        r"|Torch version \S+ has not been tested with coremltools\."
        r"|scikit-learn version \S+ is not supported\. .*Disabling scikit-learn conversion API\.",
        re.DOTALL,
    ),
    "torchao": re.compile(r"Failed to load \S*torchao\S*\.so\b"),
    "torch.utils._pytree": re.compile(r"<enum '\w+'> is an Enum subclass and is now natively supported by torch\.compile"),
}


class _NativeLibraryFilter(logging.Filter):
    """Drops the records of one logger whose message matches that logger's pattern in ``_DROPPED``."""

    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.match(record.getMessage()) is None


def _quiet_progress_bars() -> None:
    """Make tqdm bars hidden unless a caller asks for one (``disable=False``); idempotent."""
    import tqdm.std

    cls = tqdm.std.tqdm  # tqdm.tqdm and the base of tqdm.auto's class
    if getattr(cls, "_ane_vit_quiet", False):
        return
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("disable", True)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    cls._ane_vit_quiet = True


def quiet_native_library_warnings() -> None:
    """Drop the Core ML stack's Linux noise from this process's output (idempotent).

    Adds one filter to each of the ``coremltools``, ``torchao`` and ``torch.utils._pytree``
    loggers, dropping exactly the records listed in the module docstring, and hides tqdm
    progress bars that do not ask to be shown. For command lines; call it before
    coremltools is imported.
    """
    for name, pattern in _DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NativeLibraryFilter) for f in logger.filters):
            logger.addFilter(_NativeLibraryFilter(pattern))
    _quiet_progress_bars()


def import_coremltools(name: str = "coremltools"):
    """Import ``name`` (coremltools) so that a Ctrl-C during the import stops the command.

    A SIGINT that arrives during the import is recorded instead of raised inside it (where a
    bare ``except:`` of the library would swallow it) and delivered again once the import has
    finished, to the handler that was there before: Python's default raises
    ``KeyboardInterrupt``; a process that ignores SIGINT goes on ignoring it. Returns the
    module. Outside the main thread (no signal handlers there) it is a plain import.
    """
    if threading.current_thread() is not threading.main_thread():
        return importlib.import_module(name)
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        module = importlib.import_module(name)
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # now, to the previous handler
    return module

"""Ctrl-C stops a command even where a dependency swallows it, and nothing is written after it.

coremltools imports its optional dependencies inside bare ``try: ... except:`` blocks
(``coremltools/_deps/__init__.py``: scikit-learn, torch, torchvision, torchao, scipy,
transformers, ...; ``coremltools/__init__.py`` and ``models/model.py`` do the same for its
native libraries). A ``KeyboardInterrupt`` raised while one of those imports runs (the first
seconds of a command) is caught there, the dependency silently counts as missing, and the
command runs on and writes its output as if nothing had happened.

``interruptible()`` wraps a command (``stops_on_ctrl_c`` decorates a command line's ``main``
with it): it installs a SIGINT handler that *records* the Ctrl-C
and then raises ``KeyboardInterrupt`` as Python's own handler does. Where nobody catches it,
the command stops at once, as before. Where a bare ``except`` swallows it, the record stays:
``check_interrupted()`` raises ``KeyboardInterrupt`` again, and it is called before anything
is written (``ane_vit.export.save_program``) and when the wrapped block ends.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["interruptible", "check_interrupted", "stops_on_ctrl_c", "INTERRUPTED_EXIT"]

#: Exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED_EXIT = 130

_state = {"interrupted": False}


def _handler(signum, frame) -> None:
    _state["interrupted"] = True
    raise KeyboardInterrupt


def check_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived inside ``interruptible()``, even a swallowed one."""
    if _state["interrupted"]:
        raise KeyboardInterrupt("interrupted (Ctrl-C): stopped before writing anything")


@contextmanager
def interruptible() -> Iterator[None]:
    """Record every Ctrl-C in the block; raise ``KeyboardInterrupt`` at its end if one was swallowed.

    Only in the main thread (the only one Python delivers signals to); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    _state["interrupted"] = False
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
        check_interrupted()
    finally:
        signal.signal(signal.SIGINT, previous)
        _state["interrupted"] = False


def stops_on_ctrl_c(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a command line's ``main``: run it ``interruptible()``; on Ctrl-C print one line,
    ``{prog}: interrupted (Ctrl-C); nothing was written``, and return ``INTERRUPTED_EXIT``."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                with interruptible():
                    return main(*args, **kwargs)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted (Ctrl-C); nothing was written", file=sys.stderr)
                return INTERRUPTED_EXIT

        return run

    return wrap

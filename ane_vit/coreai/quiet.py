"""Keep the Core AI stack's routine chatter out of our output, and nothing else.

Three messages appear on every export and run, none of which a reader can act on:

* coreai-torch's progress banner, ``coreai-torch 0.4.3: converting 1 program(s) to Core AI``,
  printed to ``sys.stdout`` by its ``rich`` console on every ``TorchConverter.to_coreai``;
* the Linux runtime's ``ODIE [default]: Loading function 'main'``, written by native code
  straight to file descriptor 2 when a function is loaded;
* at import time, coreai-torch's ``validated with torch<=2.13.0; found torch 2.13.0+cpu``
  (``+cpu`` makes the pinned version compare above 2.13.0) and torch's log record that
  torchao registers an ``Enum`` as a pytree constant.

``drop_stdout_lines`` and ``drop_native_stderr_lines`` capture a short stretch of output,
drop the lines that match one of those exact messages, and write every other line back where
it was going, so an unexpected message still shows. ``quiet_coreai_imports`` (called by our
command line before it imports the stack, like ``ane_vit.coreml_log``) filters the import
messages; library code leaves them alone.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from ..coreml_log import quiet_native_library_warnings

__all__ = ["CONVERTER_BANNER", "RUNTIME_LOADING_LINE", "drop_stdout_lines", "drop_native_stderr_lines",
           "quiet_coreai_imports"]

#: coreai-torch's banner on every conversion.
CONVERTER_BANNER = re.compile(r"^coreai-torch \S+: converting \d+ program\(s\) to Core AI$")
#: The Linux runtime's line when a function is loaded.
RUNTIME_LOADING_LINE = re.compile(r"^ODIE \[default\]: Loading function '[^']*'$")


def _replay(text: str, drop: Any, stream: Any) -> None:
    kept = [line for line in text.splitlines(keepends=True) if not drop.match(line.rstrip("\r\n"))]
    if kept:
        stream.write("".join(kept))
        stream.flush()


@contextlib.contextmanager
def drop_stdout_lines(drop: Any = CONVERTER_BANNER) -> Iterator[None]:
    """Capture ``sys.stdout`` for the block; write back every line that does not match ``drop``
    (a compiled regular expression, ``re.Pattern``)."""
    target = sys.stdout
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        _replay(buffer.getvalue(), drop, target)


@contextlib.contextmanager
def drop_native_stderr_lines(drop: Any = RUNTIME_LOADING_LINE) -> Iterator[None]:
    """Capture file descriptor 2 (native code's stderr) for the block; write back every line
    that does not match ``drop`` (a compiled regular expression).

    Keep the block short: while it runs, anything any thread writes to fd 2 is held and
    written back when the block ends. Where fd 2 cannot be duplicated (an embedded
    interpreter without one), the block runs uncaptured.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            _replay(text, drop, sys.stderr)


class _TorchaoEnumRecordFilter(logging.Filter):
    """Drops torch's record that an Enum subclass was registered as a pytree constant (torchao does it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is an Enum subclass and is now natively supported" not in record.getMessage()


def quiet_coreai_imports() -> None:
    """For command lines, before the stack is imported: filter the import-time messages above
    (and coremltools'/torchao's native-library records, ``ane_vit.coreml_log``). Idempotent."""
    quiet_native_library_warnings()
    warnings.filterwarnings("ignore", message="coreai-torch has only been validated", category=UserWarning)
    logger = logging.getLogger("torch.utils._pytree")
    if not any(isinstance(f, _TorchaoEnumRecordFilter) for f in logger.filters):
        logger.addFilter(_TorchaoEnumRecordFilter())

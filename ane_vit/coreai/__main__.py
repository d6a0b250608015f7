"""``python -m ane_vit.coreai``: the command line of :mod:`ane_vit.coreai`.

Apple's native Core AI stack (coreai-core 1.0.0b3 on Linux) sometimes aborts the process at
interpreter exit, after the command has done and printed everything ("C++ exception handling
detected but the Swift runtime was compiled with exceptions disabled", exit status 134): seen
in about half of our full test runs, never reproduced alone. Once the stack has been loaded,
the command therefore flushes its output and leaves with ``os._exit`` and its own status,
skipping the native teardown. Nothing of ours runs at exit (files are written and renamed
before the command returns).
"""

import os
import sys

from .cli import main

try:
    status = main()
except SystemExit as stop:  # argparse's usage errors, --help
    status = stop.code
if "coreai" in sys.modules:  # the native stack was loaded in this process
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status if isinstance(status, int) else (0 if status is None else 1))
sys.exit(status)

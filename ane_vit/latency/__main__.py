"""``python -m ane_vit.latency``: the command line of :mod:`ane_vit.latency`."""

import sys

from .cli import main

sys.exit(main())

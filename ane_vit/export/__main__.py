"""``python -m ane_vit.export``: the command line of :mod:`ane_vit.export`."""

import sys

from . import main

sys.exit(main())

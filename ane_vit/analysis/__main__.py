"""``python -m ane_vit.analysis``: the command line of :mod:`ane_vit.analysis`."""

import sys

from . import main

sys.exit(main())

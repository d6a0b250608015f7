"""``python -m ane_vit.bench``: the command line of :mod:`ane_vit.bench`."""

import sys

from . import main

sys.exit(main())

"""``python -m ane_vit.coreai``: the command line of :mod:`ane_vit.coreai`."""

import sys

from .cli import main

sys.exit(main())

"""``python -m ane_vit.compress``: see ``ane_vit.compress.cli``."""

import sys

from .cli import main

sys.exit(main())

"""``python -m ane_vit.digits``: see ``ane_vit.digits.cli``."""

import sys

from .cli import main

sys.exit(main())

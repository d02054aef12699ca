"""``python -m mms_manifolds``: see :mod:`mms_manifolds.cli`."""

import sys

from .cli import main

sys.exit(main())

"""``python -m pipeline.cli``: the same command as ``cocolake`` and ``python -m pipeline``."""

import sys

from . import main

sys.exit(main())

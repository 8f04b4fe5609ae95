"""``python -m pipeline.cli``: the same command as ``cocolake`` and ``python -m pipeline``."""

from . import run

run()

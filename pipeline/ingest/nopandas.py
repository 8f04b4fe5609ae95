"""nopandas: run this process as in an installation without pandas, which cocolake does not use.

pyarrow imports pandas, when it is installed, on its first conversion of a Python list
(0.2-0.5 CPU-s and ~40 MB, on the path to the first task of every process that converts).
``block`` makes every later import of pandas fail as if it were not installed; pyarrow
then converts without it, as it does wherever pandas is absent. Dask and distributed
import pandas only to handle pandas objects, which no task of ours sends. For processes
that run ingest tasks and nothing else: the local workers (``warm``) and the ``ingest``
command; never a library caller's process, whose own code may want pandas. Stdlib only.
"""

from __future__ import annotations

import sys


class _WithoutPandas:
    """Fails every import of pandas (and its submodules) in this process, as if it were absent
    (a meta path finder: ``find_spec`` is all the import system asks of one)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (cocolake's ingest runs without it)", name=name)
        return None


def block() -> bool:
    """Fail imports of pandas from now on, unless it is imported already; whether it now is blocked."""
    if "pandas" in sys.modules:
        return False
    if not any(isinstance(f, _WithoutPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _WithoutPandas())
    return True

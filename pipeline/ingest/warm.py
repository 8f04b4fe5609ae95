"""warm: what the workers of a local cluster have done before their first task.

The imports of the task functions, and pyarrow's first conversion of Python values, happen
once in the fork server the workers are forked from (``cluster``), or where there is none,
in each worker as it starts (a Dask preload), instead of inside the first task of each
worker. Imports ``graph`` (and with it every task module); nothing imports this module but
the fork server and the workers.

The workers run as in an installation without pandas, which cocolake does not use: pyarrow
imports it, when it is installed, on its first conversion of a Python list (0.4-0.5 CPU-s
and ~40 MB per process, on the path to the first task). Here an import of pandas fails as
if it were not installed; pyarrow then converts without it, as it does wherever pandas is
absent. Dask and distributed import pandas only to handle pandas objects, which no task of
ours sends.
"""

from __future__ import annotations

import importlib.abc
import sys


class _WithoutPandas(importlib.abc.MetaPathFinder):
    """Fails every import of pandas (and its submodules) in this process, as if it were absent."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (cocolake's local workers run without it)",
                                      name=name)
        return None


if "pandas" not in sys.modules:
    sys.meta_path.insert(0, _WithoutPandas())

import pyarrow as pa  # noqa: E402 - after the finder: pyarrow looks for pandas as it converts

from . import graph  # noqa: E402, F401 - imported for its side effect: the task modules

pa.array([0])  # at import: the fork server's forks inherit it


def dask_setup(worker=None) -> None:
    """Called by the worker that preloads this module, before it takes a task: all done at import."""

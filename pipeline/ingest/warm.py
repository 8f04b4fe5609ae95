"""warm: what the workers of a local cluster have done before their first task.

The imports of the task functions, and pyarrow's first conversion of Python values, happen
once in the fork server the workers are forked from (``cluster``), or where there is none,
in each worker as it starts (a Dask preload), instead of inside the first task of each
worker. Imports ``graph`` (and with it every task module); nothing imports this module but
the fork server and the workers.

The workers run as in an installation without pandas (``nopandas``): pyarrow's first
conversion would import it, 0.4-0.5 CPU-s per process on the path to the first task.
"""

from __future__ import annotations

from . import nopandas

nopandas.block()

import pyarrow as pa  # noqa: E402 - after the finder: pyarrow looks for pandas as it converts

from . import graph  # noqa: E402, F401 - imported for its side effect: the task modules

pa.array([0])  # at import: the fork server's forks inherit it


def dask_setup(worker=None) -> None:
    """Called by the worker that preloads this module, before it takes a task: all done at import."""

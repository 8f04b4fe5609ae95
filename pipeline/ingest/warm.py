"""warm: what the workers of a local cluster run as they start (a Dask preload).

The imports of the task functions, and pyarrow's first conversion of Python values (0.3 s
of CPU: pyarrow imports pandas then), happen while the cluster starts, on every worker at
once, instead of inside the first task of each worker. Imports ``graph`` (and with it
every task module); nothing imports this module but the workers.
"""

from __future__ import annotations

import pyarrow as pa

from . import graph  # noqa: F401 - imported for its side effect: the task modules


def dask_setup(worker=None) -> None:
    """Called by the worker that preloads this module, before it takes a task."""
    pa.array([0])

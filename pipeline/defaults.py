"""defaults: the built-in defaults, the on-bad-record choice and the name rule, defined once.

Shared by ``config``, the CLI and every stage; imports only the standard library, so that
the CLI and the Dask workers read it without loading pydantic or YAML.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

DEFAULT_WAREHOUSE = "warehouse"
DEFAULT_DATASET = "demo"
DEFAULT_CHUNK_BYTES = 16 << 20
# rows per Parquet row group of an annotations part, whose rows are grouped by category
# (``ingest.tasks.cluster_by_category``): small enough that min/max statistics let a reader
# skip the groups of other categories, large enough to keep per-group overhead low
DEFAULT_ROW_GROUP_ROWS = 8192
DEFAULT_CACHE_DIR = ".cache/cocolake"
# an ingest given no worker count runs in its own process, without a local cluster, when its
# documents are known to total at most this: a cluster takes 0.5-1.5 s to start and close,
# about what a second worker saves on three chunks (val2017's instances file is 25 MB)
IN_PROCESS_BYTES = 3 * DEFAULT_CHUNK_BYTES

OnBadRecord = Literal["error", "skip"]  # stop at the first invalid record, or skip it into rejects
ON_BAD_RECORD: tuple[OnBadRecord, ...] = get_args(OnBadRecord)

# the one rule for dataset, split and run names: each is one folder name of the warehouse
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = re.compile(NAME_PATTERN)


def name_problem(what: str, name) -> str | None:
    """None when ``name`` follows the name rule, else the problem: ``split name 'a b': use ...``."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return None
    return f"{what} name {name!r}: use letters, digits, '.', '_' or '-'"

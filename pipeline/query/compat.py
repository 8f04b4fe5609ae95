"""compat: the DuckDB calls whose name differs between DuckDB 1.x and 2.x, in one place.

cocolake runs on DuckDB >= 1.1 (pyproject.toml); every other module calls these instead of
probing the DuckDB API itself. Imports nothing of cocolake.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

try:
    # DuckDB >= 2: the engine module, whose connections connect, execute and fetch rows;
    # the ``duckdb`` package adds the relation and expression API on top of it, and
    # importing that costs about 0.1 s, a third of a short ``cocolake sql``. The classes
    # and errors are the same objects either way (``duckdb.Error is _duckdb.Error``).
    import _duckdb as engine
except ImportError:  # DuckDB 1.x
    import duckdb as engine

if TYPE_CHECKING:
    import pyarrow as pa


def fetch_arrow(rel) -> pa.Table:
    """A relation's rows as an Arrow table (``to_arrow_table``; older releases ``arrow``)."""
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


def arrow_reader(rel, rows: int) -> pa.RecordBatchReader:
    """A relation's rows as Arrow record batches of up to ``rows`` rows (DuckDB >= 1.4
    ``to_arrow_reader``; older releases ``fetch_arrow_reader``)."""
    reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader
    return reader(rows)


def sql_type(con, name: str):
    """The DuckDB type named ``name`` (DuckDB >= 2 ``sqltype``; 1.x ``type``)."""
    make = getattr(con, "sqltype", None) or con.type
    return make(name)


def executed_arrow(con) -> pa.Table:
    """The rows of the statement ``con.execute`` ran last, as an Arrow table."""
    fetch = getattr(con, "fetch_arrow_table", None)  # DuckDB 1.x
    if fetch is not None:
        return fetch()
    import duckdb  # noqa: F401  (DuckDB 2: adds the connection's Arrow methods)

    with warnings.catch_warnings():
        # "Arrow output on a DB-API result makes an extra copy": the copy costs less than
        # running the statement again as a relation
        warnings.simplefilter("ignore", UserWarning)
        return con.to_arrow_table()

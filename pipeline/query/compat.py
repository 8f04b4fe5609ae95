"""compat: the DuckDB calls whose name differs between DuckDB 1.x and 2.x, in one place.

cocolake runs on DuckDB >= 1.1 (pyproject.toml); every other module calls these instead of
probing the DuckDB API itself. Imports nothing of cocolake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

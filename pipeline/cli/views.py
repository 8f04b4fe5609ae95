"""``cocolake views --db FILE.duckdb``: a DuckDB database with the warehouse's views.

The file holds views only (no data): ``raw_<table>`` over the Parquet parts the manifest
lists, by their absolute paths or URLs, the views of ``sql/views`` on top, and the pure-SQL
macros of ``sql/functions``. It is written in DuckDB 1.0's storage format, so DuckDB 1.1
and later clients (CLI, R, JDBC, ...) open it, read-only too, and query every view; the
Python-backed mask functions (``rle_area``, ``rle_iou``, ...) exist only on connections
cocolake opens.
Re-run it after an ingest: the parts a new warehouse version lists are other files.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib

from ..errors import ConfigError, QueryError
from .location import add_warehouse_options, settings

log = logging.getLogger(__name__)

_DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
# the file's storage format: DuckDB 1.0's (storage version 64), the oldest there is since
# 0.10 and enough for views and macros; DuckDB 2's own format is refused by every 1.x client
# ("database file with version number 69, but we can only read versions between 64 and 68")
STORAGE_VERSION = "v1.0.0"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "views",
        help="write a DuckDB database file with the warehouse views",
        description="Write the DuckDB database FILE (e.g. coco.duckdb, the name as given) holding the views "
        "of sql/views over the warehouse's Parquet files "
        "(by absolute path) and the pure-SQL macros, in DuckDB 1.0's storage format: any DuckDB client "
        "from 1.1 on (CLI, Python, R, JDBC/DBeaver) opens it, read-only too, and queries every view; "
        "the Python mask functions (rle_area, rle_iou, ...) exist only in cocolake sql.",
    )
    p.add_argument("--db", required=True, metavar="FILE", help="the DuckDB database to write (replaced if it exists)")
    add_warehouse_options(p)
    return p


def write_database(warehouse: str, dataset: str, db: str) -> list[str]:
    """Build the database at a temporary name, then rename it over ``db``; its view names."""
    import duckdb

    from ..query import functions as sqlfuncs
    from ..query.views import connect

    target = pathlib.Path(db)
    if not target.parent.is_dir():
        raise ConfigError(f"--db {db}: directory {target.parent} does not exist")
    if target.exists() and not _is_duckdb(target):
        raise ConfigError(f"--db {db}: exists and is not a DuckDB database; not replacing it")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        con = connect(warehouse, dataset, database=str(tmp), functions=False, storage_version=STORAGE_VERSION)
        try:
            sqlfuncs.register_macros(con)
            views = [r[0] for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal AND database_name = current_database() "
                "ORDER BY view_name").fetchall()]
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
        target.with_name(target.name + ".wal").unlink(missing_ok=True)
    except duckdb.Error as err:
        raise QueryError(f"{db}: {err}") from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return views


def _is_duckdb(path: pathlib.Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(12)[8:12] == _DUCKDB_MAGIC
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    views = write_database(s["warehouse"], s["dataset"], args.db)
    base = [v for v in views if not v.startswith("raw_")]
    print(f"wrote {args.db}: {len(base)} views ({', '.join(base)}) over {s['warehouse']}/{s['dataset']}")
    print(f"open it read-only: duckdb -readonly {args.db}")
    return 0

"""``cocolake sql "SELECT ..."`` (or ``--file q.sql``): run SQL over the warehouse views.

The connection only reads: statements other than queries (SELECT, WITH, FROM, DESCRIBE,
SHOW, SUMMARIZE, EXPLAIN) are refused, and DuckDB may open no file but the parts the
manifest lists, unless ``--allow-external-access``.
The output options and writers are ``cli.common``'s.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

from ..errors import ConfigError, QueryError
from .common import add_output_options, connect, fetch, output_format, read, write_result
from .location import add_warehouse_options


# ------------------------------------------------------------------ the command
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sql",
        help="run SQL over the warehouse views",
        description="Run SQL over the views of sql/views (images, annotations, annotations_enriched, "
        "category_stats, ...) with the mask functions (rle_area, rle_bbox, rle_iou, rle_decode, ...). "
        "Read-only: only queries (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) run and no file "
        "but the warehouse's parts is opened. "
        "Columns with the same name (SELECT a.id, b.id ...) come out as id, id_1 in every format, "
        "as DuckDB's own clients name them.",
    )
    p.add_argument("query", nargs="?", help="the SQL text (or use --file)")
    p.add_argument("--file", metavar="FILE", help="read the SQL from this file ('-': standard input)")
    add_warehouse_options(p)
    add_output_options(p)
    p.add_argument("--allow-external-access", action="store_true",
                   help="lift the read-only guard: any statement, any file (COPY, read_csv of other files, ...)")
    return p


def read_query(args) -> str:
    if bool(args.query) == bool(args.file):
        raise ConfigError('give the SQL as an argument or with --file FILE (one of them): cocolake sql "SELECT 1"')
    if args.file == "-":
        return sys.stdin.read()
    if args.file:
        try:
            return pathlib.Path(args.file).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"--file {args.file}: {err.strerror or err}") from None
    return args.query


def run(args: argparse.Namespace) -> int:
    from ..query.compat import executed_arrow
    from ..query.views import run_sql

    text = read_query(args)
    free = args.allow_external_access
    # Parquet is written from Arrow; the text formats from plain rows when the types allow
    rows = executed_arrow if output_format(args.format, args.out) == "parquet" else fetch
    if free:  # any statement: never run twice
        con = connect(args, restrict=False, for_sql=text)
        try:
            table = run_sql(con, text, read_only=False, fetch=rows)
        finally:
            con.close()
    else:  # read only: run again on the new version if a commit replaced the one opened
        try:
            table = read(args, lambda con: run_sql(con, text, fetch=rows), for_sql=text)
        except QueryError as err:
            if not re.match(r"(statement \d+: )?Catalog Error", str(err)):
                raise
            # the connection has only the views the SQL names: DuckDB's "Did you mean" can only
            # suggest those; ask a connection with every view for its hint (reads only, so safe)
            table = _run_with_every_view(args, text, rows)
    if table is None:
        if args.out:
            raise QueryError("the last statement returns no rows to write")
        return 0
    write_result(table, args.format, args.out)
    return 0


def _run_with_every_view(args, text: str, rows):
    from ..query.views import run_sql

    con = connect(args, for_sql=None)
    try:
        return run_sql(con, text, fetch=rows)
    finally:
        con.close()

"""``cocolake query [NAME]``: run a ready-made analysis query of ``sql/queries``.

Without NAME, lists the queries with what one row of each is.
"""

from __future__ import annotations

import argparse

from .location import add_warehouse_options
from .common import add_output_options, print_catalogue, read, write_result


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "query",
        help="run a ready-made analysis query (list them without NAME)",
        description="Run one of the analysis queries in sql/queries (class balance, boxes per image, "
        "tiny objects, crowd share, keypoint visibility, caption lengths, images without annotations, "
        "category co-occurrence). Without NAME, list them.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="the query's name (its file name without .sql)")
    add_warehouse_options(p)
    add_output_options(p, default="table")
    return p


def run(args: argparse.Namespace) -> int:
    from ..query import checks

    if not args.name:
        print_catalogue(checks.queries())
        return 0
    found = checks.queries()
    text = found[args.name].text if args.name in found else None
    table = read(args, lambda con: checks.run_query(con, args.name), for_sql=text)
    fmt = args.format or (None if args.out else "table")
    write_result(table, fmt, args.out)
    return 0

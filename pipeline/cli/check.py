"""``cocolake check [NAME ...]``: run the data checks of ``sql/checks``.

Each check returns the offending rows; the command prints PASS or FAIL per check and a
table of what a failing one found. Exit status 1 when any check finds rows.
"""

from __future__ import annotations

import argparse
import textwrap

from .location import add_warehouse_options
from .common import print_catalogue, read, render_table


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check",
        help="run the data checks; non-zero exit when any finds offending rows",
        description="Run the checks in sql/checks (dangling ids, boxes outside the image, degenerate "
        "boxes, area far from the mask area, duplicate ids, polygons outside the image, ...). "
        "Each returns the offending rows; exit status 1 when any does.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="run only these checks (default: all)")
    add_warehouse_options(p)
    p.add_argument("--rows", type=int, default=20, metavar="N",
                   help="offending rows shown per failing check (default: 20)")
    p.add_argument("--list", action="store_true", help="list the checks and what each looks for")
    return p


def run(args: argparse.Namespace) -> int:
    from ..query import checks

    if args.list:
        print_catalogue(checks.checks())
        return 0
    results = read(args, lambda con: checks.run_checks(con, args.names or None))
    width = max(len(r.name) for r in results)
    for r in results:
        if r.passed:
            print(f"PASS  {r.name}")
            continue
        noun = "row" if r.rows.num_rows == 1 else "rows"
        print(f"FAIL  {r.name:<{width}}  {r.rows.num_rows} {noun}")
        print(textwrap.indent(textwrap.fill(r.description, 96), "      "))
        print(textwrap.indent(render_table(r.rows, max_rows=max(args.rows, 1)), "      "))
    failed = [r.name for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0

"""``cocolake merge --from A --from B --into NAME``: datasets of one warehouse into one."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "merge",
        help="merge datasets into a new one, with ids that never collide",
        description="Write dataset NAME with every split of the --from datasets, in one commit (re-running "
        "replaces it). Categories with the same name become one; images that are the same file become one; "
        "ids are kept when no two sources share one, else renumbered. The merge_sources view tells, for every "
        "merged id, the source dataset and original id.",
    )
    p.add_argument("--warehouse", default="warehouse", help="warehouse directory or fsspec URL (default: warehouse)")
    p.add_argument("--from", dest="sources", action="append", required=True, metavar="DATASET",
                   help="a source dataset (repeat it; the first source's category ids win)")
    p.add_argument("--into", required=True, metavar="NAME", help="the dataset to write (replaced if it exists)")
    p.add_argument("--categories", default="by-name", metavar="by-name|FILE",
                   help="by-name: one category per name (default); FILE: a class-map YAML file, as export "
                   "--classes reads (classes: {source name: target name or null}, ids: {target: id}, unlisted: "
                   "keep|drop)")
    p.add_argument("--ids", choices=("keep", "renumber"),
                   help="keep the sources' ids (fails on the first id two sources share) or renumber them "
                   "(default: keep when no id collides, else renumber)")
    return p


def run(args) -> int:
    from ..categories import BY_NAME, load_category_map
    from ..merge import merge

    cmap = BY_NAME if args.categories == "by-name" else load_category_map(args.categories)
    report = merge(args.warehouse, args.sources, args.into, categories=cmap, ids=args.ids)
    for line in report.lines():
        print(line)
    return 0

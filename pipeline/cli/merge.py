"""``cocolake merge --from A --from B --into NAME``: datasets of one warehouse into one."""

from __future__ import annotations

import argparse
import os

from ..errors import ConfigError
from .location import ENVIRONMENT, settings


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "merge",
        help="merge datasets into a new one, with ids that never collide",
        description="Write dataset NAME with every split of the --from datasets, in one commit (re-running "
        "replaces it). Categories with the same name become one; images that are the same file become one; "
        "ids are kept when no two sources share one, else renumbered. The merge_sources view tells, for every "
        "merged id, the source dataset and original id.",
    )
    p.add_argument("--warehouse", help="warehouse directory or fsspec URL "
                   "(default: $COCOLAKE_WAREHOUSE, else the --config file's, else warehouse)")
    p.add_argument("--from", dest="sources", action="append", required=True, metavar="DATASET",
                   help="a source dataset (repeat it; the first source's category ids win)")
    p.add_argument("--into", "--dataset", dest="into", metavar="NAME",
                   help="the dataset to write, replaced if it exists (default: $COCOLAKE_DATASET, else the "
                   "--config file's dataset; no built-in default)")
    p.add_argument("--config", metavar="FILE",
                   help="take the warehouse and the target dataset from this YAML config; options and "
                   "COCOLAKE_* variables win")
    p.add_argument("--categories", default="by-name", metavar="by-name|FILE",
                   help="by-name: one category per name (default); FILE: a class-map YAML file, as export "
                   "--classes reads (classes: {source name: target name or null}, ids: {target: id}, unlisted: "
                   "keep|drop)")
    p.add_argument("--ids", choices=("keep", "renumber"),
                   help="keep the sources' ids (fails on the first id two sources share) or renumber them "
                   "(default: keep when no id collides, else renumber)")
    return p


def target_dataset(args) -> str:
    """--into, else $COCOLAKE_DATASET, else the config file's dataset; never a built-in default
    (a merge replaces the dataset it writes)."""
    into = args.into or os.environ.get(ENVIRONMENT["dataset"], "").strip() or None
    if into is None and args.config:
        from ..config import load_config

        into = load_config(args.config).dataset
    if into is None:
        raise ConfigError("--into NAME: give the dataset to write (or set $COCOLAKE_DATASET)")
    return into


def run(args) -> int:
    from ..categories import BY_NAME, load_category_map
    from ..merge import merge

    warehouse = settings(args)["warehouse"]
    into = target_dataset(args)
    cmap = BY_NAME if args.categories == "by-name" else load_category_map(args.categories)
    report = merge(warehouse, args.sources, into, categories=cmap, ids=args.ids)
    for line in report.lines():
        print(line)
    return 0

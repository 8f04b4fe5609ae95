"""``cocolake vacuum``: delete what a dataset's manifest does not list.

Leftovers of killed runs in the table folders, the replaced version's parts waiting in
``_trash/``, half-written manifests: each dataset keeps its manifest and exactly the parts
it lists. A dataset that a run is writing (it holds the writer lock) is left alone.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import WarehouseError
from .location import option_or_environment


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "vacuum",
        help="delete every file of a dataset that its manifest does not list",
        description="Delete what the manifest of a dataset does not list: parts left by killed runs, the "
        "version the last commit replaced, kept in _trash/ until the next commit, temporary files. Every dataset "
        "of the warehouse unless --dataset is given. A dataset that a run is writing is skipped with an "
        "error; on object stores (no lock there) run it while no run writes.",
    )
    p.add_argument("--warehouse", help="warehouse directory or fsspec URL "
                   "(default: $COCOLAKE_WAREHOUSE, else the --config file's, else warehouse)")
    p.add_argument("--dataset", help="only this dataset (default: $COCOLAKE_DATASET, else the --config "
                   "file's, else every dataset of the warehouse)")
    p.add_argument("--config", metavar="FILE",
                   help="take warehouse and dataset from this YAML config; options and COCOLAKE_* variables win")
    return p


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover - the loop returns


def run(args: argparse.Namespace) -> int:
    from ..warehouse import Warehouse, list_datasets

    warehouse, dataset = option_or_environment(args, "warehouse"), option_or_environment(args, "dataset")
    if args.config:
        from ..config import load_config

        cfg = load_config(args.config)
        warehouse = warehouse or cfg.warehouse
        dataset = dataset or cfg.dataset
    warehouse = warehouse or "warehouse"
    names = [dataset] if dataset else list_datasets(warehouse)
    if not names:
        raise WarehouseError(f"{warehouse}: no datasets here (no folder with a _manifest.json)")
    refused = 0
    for name in names:
        wh = Warehouse(warehouse, name)
        try:
            wh.require_manifest()  # before the lock, which would create the folder
            with wh.writer_lock():
                files, nbytes = wh.vacuum()
        except WarehouseError as err:
            if dataset:
                raise
            print(f"cocolake vacuum: error: {err}", file=sys.stderr)
            refused += 1
            continue
        print(f"{name}: removed {files} file{'s' if files != 1 else ''} ({human_bytes(nbytes)})")
    return 1 if refused else 0

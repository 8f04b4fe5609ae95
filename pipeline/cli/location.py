"""Where a command works: ``--warehouse``, ``--dataset`` and ``--config``, for every command
that reads or writes a warehouse.

Each value is the first one set of: the command-line option, the environment variable
(``COCOLAKE_WAREHOUSE``, ``COCOLAKE_DATASET``; empty counts as unset), the ``--config``
file's value, the built-in default (``warehouse``, ``demo``). ``image_root`` (export,
report) comes from the option, else the config file.
"""

from __future__ import annotations

import argparse
import os

from ..defaults import DEFAULT_DATASET, DEFAULT_WAREHOUSE

# setting -> the environment variable that is its default
ENVIRONMENT = {"warehouse": "COCOLAKE_WAREHOUSE", "dataset": "COCOLAKE_DATASET"}
DEFAULTS = {"warehouse": DEFAULT_WAREHOUSE, "dataset": DEFAULT_DATASET}

PRECEDENCE = ("an option given wins over the environment variable, which wins over the --config "
              "file, which wins over the built-in default")

CONFIG_HELP = "take warehouse, dataset (and image root) from this YAML config; options and COCOLAKE_* variables win"


def add_warehouse_options(p: argparse.ArgumentParser, *, config_help: str = CONFIG_HELP) -> None:
    p.add_argument("--warehouse", help="warehouse directory or fsspec URL "
                   "(default: $COCOLAKE_WAREHOUSE, else the --config file's, else warehouse)")
    p.add_argument("--dataset", help="dataset name: the warehouse sub-directory "
                   "(default: $COCOLAKE_DATASET, else the --config file's, else demo)")
    p.add_argument("--config", metavar="FILE", help=config_help)


def option_or_environment(args, key: str) -> str | None:
    """The option's value, else the environment variable's, else None (a config file's, or the default, comes next)."""
    value = getattr(args, key, None)
    if value is not None:
        return value
    return os.environ.get(ENVIRONMENT[key], "").strip() or None


def settings(args) -> dict:
    """``warehouse``, ``dataset`` and ``image_root`` of a command, in the order the module docstring says."""
    found = {**DEFAULTS, "image_root": None}
    if getattr(args, "config", None):
        from ..config import load_config

        cfg = load_config(args.config)
        found.update(warehouse=cfg.warehouse, dataset=cfg.dataset, image_root=cfg.image_root)
    for key in ENVIRONMENT:
        value = option_or_environment(args, key)
        if value is not None:
            found[key] = value
    if getattr(args, "image_root", None) is not None:
        found["image_root"] = args.image_root
    return found

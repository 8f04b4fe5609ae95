"""``cocolake ingest``: sources → warehouse, as a Dask job; prints a summary."""

from __future__ import annotations

import argparse
import logging

from ..errors import ConfigError
from .location import add_warehouse_options, option_or_environment
from .progress import make_progress

log = logging.getLogger(__name__)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "ingest",
        help="ingest COCO JSON files into the warehouse",
        description="Ingest COCO-format JSON (files, .json.gz, .zip, directories, http(s), any fsspec URL) "
        "into <warehouse>/<dataset>/ as Hive-partitioned Parquet.",
    )
    add_warehouse_options(p, config_help="YAML config (see configs/): sources, warehouse, dataset, workers, ...; "
                          "options given here (and COCOLAKE_WAREHOUSE, COCOLAKE_DATASET) override it")
    p.add_argument("--source", action="append", metavar="URL", help="a source URL; repeat for several")
    p.add_argument("--split", help="put every source into this split instead of the one in its file name")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core, or this process "
                   "for up to 48 MB of documents; 1 = synchronous)")
    p.add_argument("--scheduler", metavar="ADDR", help="address of an existing Dask scheduler, tcp://host:port")
    p.add_argument("--on-bad-record", choices=("error", "skip"),
                   help="stop at the first bad record (default) or skip bad records into the rejects table")
    p.add_argument("--chunk-mb", type=float, help="MB of JSON per task (default 16)")
    p.add_argument("--batch-files", type=int, metavar="N",
                   help="read a directory of small files (each at most --chunk-mb) as one per-image set, N files "
                   "per task (default 1000; such a set is found without this option when its file names carry "
                   "no split, as SA-1B's sa_<id>.json)")
    p.add_argument("--no-progress", action="store_true", help="plain log lines even on a terminal")
    return p


def load_settings(args):
    from ..config import Config, load_config

    if args.config:
        cfg = load_config(args.config)
    elif args.source:
        cfg = Config(sources=[{"url": u} for u in args.source])
    else:
        raise ConfigError("nothing to ingest: give --source URL (repeatable) or --config FILE")
    overrides = {
        "warehouse": option_or_environment(args, "warehouse"),
        "dataset": option_or_environment(args, "dataset"),
        "workers": args.workers,
        "scheduler": args.scheduler,
        "on_bad_record": args.on_bad_record,
        "chunk_mb": args.chunk_mb,
    }
    if args.source and args.config:
        overrides["sources"] = [{"url": u} for u in args.source]
    return cfg.with_overrides(**overrides)


def ensure_synth(cfg) -> None:
    """Generate the synthetic demo dataset a config asks for, once per parameter set."""
    if cfg.synth is None:
        return
    from .. import synth

    if synth.ensure_generated(cfg.synth.out, images=cfg.synth.images, seed=cfg.synth.seed):
        log.info("generated the synthetic dataset in %s (%d images, seed %d)",
                 cfg.synth.out, cfg.synth.images, cfg.synth.seed)


def run(args) -> int:
    cfg = load_settings(args)
    from ..ingest.cluster import local_json_sizes, local_workers, start_fork_server

    ensure_synth(cfg)  # generated once: later runs find the files
    # no fork server for an input small enough to run in this process (run_ingest decides
    # that again once the sources are resolved, for every kind of source)
    workers = local_workers(cfg.workers, cfg.scheduler, local_json_sizes([s.url for s in cfg.sources]))
    start_fork_server(workers, cfg.scheduler)  # its imports overlap this process's
    from ..ingest.run import run_ingest

    report = run_ingest(
        source_specs=list(cfg.sources),
        warehouse=cfg.warehouse,
        dataset=cfg.dataset,
        split=args.split,
        workers=cfg.workers,
        scheduler=cfg.scheduler,
        chunk_bytes=int(cfg.chunk_mb * (1 << 20)),
        on_bad_record=cfg.on_bad_record,
        cache_dir=cfg.cache_dir,
        progress=make_progress(args.no_progress),
        batch_files=args.batch_files,
    )
    for line in report.lines(verbose=args.verbose):
        print(line)
    return 0

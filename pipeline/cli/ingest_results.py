"""``cocolake ingest-results``: a COCO results file → the ``predictions`` table of a run."""

from __future__ import annotations

import argparse

from .location import add_warehouse_options, settings


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "ingest-results",
        help="ingest a COCO results file (detections) as a named run",
        description="Ingest a COCO results file (a JSON list of detections with image_id, category_id, "
        "score and bbox / segmentation / keypoints) into <warehouse>/<dataset>/predictions/run=<run>/. "
        "Re-ingesting a run replaces it.",
    )
    p.add_argument("file", metavar="FILE", help="the results file: path, .json.gz, zip://member::archive, any fsspec URL")
    p.add_argument("--run", required=True, help="name of the run (letters, digits, '.', '_', '-')")
    add_warehouse_options(p, config_help="take warehouse and dataset from this YAML config; options and "
                          "COCOLAKE_* variables win")
    p.add_argument("--split", help="the ground-truth split the detections are for (default: found from the image ids)")
    p.add_argument("--on-bad-record", choices=("error", "skip"), default="error",
                   help="stop at the first bad detection (default) or skip bad ones into the rejects table")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1: synchronous)")
    p.add_argument("--scheduler", metavar="ADDR", help="address of an existing Dask scheduler, tcp://host:port")
    p.add_argument("--chunk-mb", type=float, default=16, help="MB of JSON per task (default 16)")
    p.add_argument("--no-progress", action="store_true", help="plain log lines even on a terminal")
    return p


def run(args) -> int:
    from ..evaluate.detections import run_ingest_results
    from .progress import make_progress

    loc = settings(args)
    report = run_ingest_results(
        args.file,
        run=args.run,
        warehouse=loc["warehouse"],
        dataset=loc["dataset"],
        split=args.split,
        workers=args.workers,
        scheduler=args.scheduler,
        chunk_bytes=int(args.chunk_mb * (1 << 20)),
        on_bad_record=args.on_bad_record,
        progress=make_progress(args.no_progress),
    )
    for line in report.lines():
        print(line)
    return 0

"""``cocolake export``: a subset picked by one SQL predicate → COCO JSON, YOLO, Parquet or HF shards."""

from __future__ import annotations

import argparse
import pathlib

from ..errors import ConfigError
from .location import add_warehouse_options, settings
from .progress import make_progress


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a subset as COCO JSON, YOLO, Parquet or a Hugging Face dataset, with its images",
        description="Export the annotations a SQL predicate picks (and the images that hold them) as COCO "
        "JSON, an Ultralytics YOLO dataset, a Parquet warehouse or Parquet shards of one row per image for "
        "Hugging Face datasets. With no --where/--sql everything is "
        "exported, and a COCO export gives back the source files.",
    )
    add_warehouse_options(p, config_help="take warehouse, dataset and image root from this YAML config; "
                          "options and COCOLAKE_* variables win")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--where", metavar="PREDICATE",
                      help="SQL boolean expression over annotations_enriched, e.g. \"category_name = 'giraffe' "
                      "AND area_bucket = 'large'\"")
    pick.add_argument("--sql", metavar="FILE",
                      help="file with a SELECT returning an annotation_id or image_id column (optionally split)")
    p.add_argument("--split", dest="splits", action="extend", nargs="+", metavar="S",
                   help="only these splits (repeatable; default: all)")
    p.add_argument("--format", required=True, choices=("coco", "yolo", "parquet", "hf"),
                   help="output format (hf: Parquet shards of one row per image, for Hugging Face datasets)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: new or empty (it is built beside it and renamed into place at the end)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export at --out whole (a directory of other files is never replaced)")
    p.add_argument("--images", default="copy", choices=("copy", "link", "none"),
                   help="copy the subset's image files (parquet: embed them as image_bytes), hard/sym-link "
                   "local ones, or none (default: copy)")
    p.add_argument("--keep", default="matching", choices=("matching", "all"),
                   help="keep only the matching annotations, or all annotations of the matching images")
    p.add_argument("--split-ratio", type=float, metavar="R",
                   help="re-split the subset into train (fraction R) and val, by a hash of the image id")
    p.add_argument("--seed", type=int, default=0, help="seed of the --split-ratio hash (default: 0)")
    p.add_argument("--image-root", metavar="R",
                   help="where the image files are: a directory or .zip holding <split>/<file_name> or <file_name>, "
                   "or a URL prefix followed by <split>/<file_name>; {split} in R is replaced by the image's split "
                   "(default: the --config file's image_root, else each coco_url)")
    p.add_argument("--task", default="detect", choices=("detect", "segment"),
                   help="YOLO labels: boxes or polygons (default: detect)")
    p.add_argument("--include-crowd", action="store_true", help="YOLO: keep iscrowd=1 annotations as objects")
    p.add_argument("--classes", metavar="all|used|FILE",
                   help="which categories to write: all, only those the subset's annotations use (YOLO and hf: "
                   "contiguous class indices in category-id order), or a class-map YAML file that renames, "
                   "merges (several names onto one) and drops (null) categories by name. Default: all for "
                   "coco and parquet (round trip), used for yolo and hf")
    p.add_argument("--threads", type=int, default=8, help="parallel image transfers (default: 8)")
    p.add_argument("--allow-external-access", action="store_true",
                   help="let --where/--sql read files outside the warehouse (e.g. read_csv('ids.csv')); by "
                   "default they read the warehouse's parts and nothing else")
    p.add_argument("--no-progress", action="store_true", help="plain log lines even on a terminal")
    return p


def run(args) -> int:
    from ..export import ExportOptions, run_export

    sql = None
    if args.sql:
        try:
            sql = pathlib.Path(args.sql).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"--sql {args.sql}: cannot read: {err.strerror or err}") from None
    loc = settings(args)
    opts = ExportOptions(
        out=args.out,
        format=args.format,
        warehouse=loc["warehouse"],
        dataset=loc["dataset"],
        where=args.where,
        sql=sql,
        splits=tuple(args.splits or ()),
        images=args.images,
        keep=args.keep,
        split_ratio=args.split_ratio,
        seed=args.seed,
        image_root=loc["image_root"],
        task=args.task,
        include_crowd=args.include_crowd,
        threads=args.threads,
        allow_external_access=args.allow_external_access,
        overwrite=args.overwrite,
        classes=args.classes,
    )
    report = run_export(opts, make_progress(args.no_progress, "file", 10))
    for line in report.lines():
        print(line)
    return 0

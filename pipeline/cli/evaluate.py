"""``cocolake evaluate``: COCO metrics of a run on the ground truth, or on a SQL-selected subset."""

from __future__ import annotations

import argparse
import json

from .location import add_warehouse_options, settings


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="COCO metrics (AP, AR) of a run, on a split or on the subset a SQL predicate selects",
        description="Evaluate the detections of a run against the ground truth as pycocotools' COCOeval "
        "does. --where restricts the evaluation to the images and categories of the annotations "
        "(annotations_enriched rows) that the predicate selects, as COCOeval's params.imgIds/catIds.",
    )
    p.add_argument("--run", required=True, help="the run to evaluate (see `cocolake ingest-results`)")
    p.add_argument("--iou-type", choices=("bbox", "segm", "keypoints"), default="bbox", help="default: bbox")
    p.add_argument("--protocol", choices=("coco", "lvis"),
                   help="coco (COCOeval) or lvis (LVISEval: federated, 300 detections per image, APr/APc/APf); "
                   "default: lvis when the ground truth has LVIS's fields (category frequency), else coco")
    p.add_argument("--where", metavar="PREDICATE",
                   help="SQL predicate over annotations_enriched, e.g. \"category_name = 'dog' AND area_bucket = 'large'\"")
    p.add_argument("--split", help="ground-truth split (default: the split the run's detections are on)")
    add_warehouse_options(p, config_help="take warehouse and dataset from this YAML config; options and "
                          "COCOLAKE_* variables win")
    p.add_argument("--per-category", action="store_true", help="also print AP per category")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.add_argument("--allow-external-access", action="store_true",
                   help="let --where read files outside the warehouse (read_csv of a list of ids, ...); "
                   "by default its connection opens the warehouse's parts and nothing else")
    p.add_argument("--no-save-matches", action="store_true",
                   help="do not store the per-detection match table (stored when evaluating a whole split)")
    return p


def run(args) -> int:
    from ..evaluate import lvis, metrics, store
    from ..query.views import connect

    loc = settings(args)
    con = connect(loc["warehouse"], loc["dataset"], restrict=not args.allow_external_access)
    try:
        protocol = args.protocol or lvis.default_protocol(con, args.run, args.split, args.iou_type)
        how = lvis.evaluate if protocol == "lvis" else metrics.evaluate
        result = how(con, args.run, iou_type=args.iou_type, where=args.where, split=args.split)
        if args.where is None and not args.no_save_matches:
            store.save_matches(loc["warehouse"], loc["dataset"], result)
    finally:
        con.close()
    if args.format == "json":
        out = {"run": result.run, "split": result.split, "iou_type": result.iou_type, "protocol": protocol,
               "where": args.where,
               "images": result.n_images, "categories": result.n_categories, "stats": result.summary()}
        if args.per_category:
            out["per_category"] = result.per_category()
        print(json.dumps(out, indent=1))
        return 0
    for line in result.lines():
        print(line)
    if args.per_category:
        print()
        for line in result.per_category_lines():
            print(line)
    return 0

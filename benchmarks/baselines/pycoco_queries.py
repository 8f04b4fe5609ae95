"""Baseline for the analysis queries: load with pycocotools, answer with a Python loop.

Each query is a separate run (a user asking one question loads the file for it):

- ``category_stats``: per category, annotations, distinct images, crowd annotations,
  mean and median ``area`` and the area buckets (what the ``category_stats`` view gives);
- ``area_buckets``: annotations per COCO area bucket (small < 32², medium < 96², large);
- ``top_images``: the 10 images with the most annotations.

usage: python benchmarks/baselines/pycoco_queries.py INSTANCES.json QUERY
"""

import collections
import statistics
import sys

from pycocotools.coco import COCO


def bucket(area: float) -> str:
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"


def category_stats(coco: COCO) -> list[tuple]:
    areas = collections.defaultdict(list)
    crowd = collections.Counter()
    images = collections.defaultdict(set)
    for a in coco.dataset["annotations"]:
        c = a["category_id"]
        areas[c].append(a["area"])
        crowd[c] += a.get("iscrowd", 0) != 0
        images[c].add(a["image_id"])
    rows = []
    for c in sorted(coco.cats):
        values = areas.get(c, [])
        buckets = collections.Counter(map(bucket, values))
        mean = statistics.fmean(values) if values else None
        median = statistics.median(values) if values else None
        rows.append((c, coco.cats[c]["name"], len(values), len(images[c]), crowd[c], mean, median,
                     buckets["small"], buckets["medium"], buckets["large"]))
    return rows


def area_buckets(coco: COCO) -> list[tuple]:
    counts = collections.Counter()
    for a in coco.dataset["annotations"]:
        counts[bucket(a["area"])] += 1
    return sorted(counts.items())


def top_images(coco: COCO, n: int = 10) -> list[tuple]:
    per_image = {img_id: len(ann_ids) for img_id, ann_ids in coco.imgToAnns.items()}
    return sorted(per_image.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


QUERIES = {"category_stats": category_stats, "area_buckets": area_buckets, "top_images": top_images}


def main(path: str, query: str) -> None:
    if query not in QUERIES:
        sys.exit(f"unknown query {query!r}; expected one of {', '.join(QUERIES)}")
    coco = COCO(path)
    for row in QUERIES[query](coco):
        print(*row, sep="\t")


if __name__ == "__main__":
    main(*sys.argv[1:])

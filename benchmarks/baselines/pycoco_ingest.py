"""Baseline for ingest: what users do today to get every mask as COCO RLE.

pycocotools loads the whole document into Python objects (``COCO(path)`` builds its
indexes), then ``annToRLE`` turns each annotation's polygons / uncompressed RLE into
compressed RLE, one annotation at a time.

usage: python benchmarks/baselines/pycoco_ingest.py INSTANCES.json
"""

import sys

from pycocotools.coco import COCO


def main(path: str) -> None:
    coco = COCO(path)
    masks = 0
    counts_bytes = 0
    for ann in coco.dataset["annotations"]:
        rle = coco.annToRLE(ann)
        masks += 1
        counts_bytes += len(rle["counts"])
    print(f"{masks} masks encoded, {counts_bytes} bytes of RLE counts")


if __name__ == "__main__":
    main(sys.argv[1])

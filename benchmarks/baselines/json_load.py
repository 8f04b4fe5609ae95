"""Baseline for ingest: the least anything that reads the document as Python objects pays.

usage: python benchmarks/baselines/json_load.py INSTANCES.json
"""

import json
import sys


def main(path: str) -> None:
    with open(path) as f:  # text mode, as pycocotools opens it (binary would hold bytes and str at once)
        data = json.load(f)
    print(f"{len(data.get('images', []))} images, {len(data.get('annotations', []))} annotations")


if __name__ == "__main__":
    main(sys.argv[1])

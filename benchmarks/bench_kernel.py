"""Micro-benchmark of the mask kernel: µs per annotation, polygons and crowd RLE to counts.

``python benchmarks/bench_kernel.py [--repeat 50] [--runs 15]``

Input: every polygon annotation of coco-mini's instances files (train and val), repeated
``--repeat`` times as one batch of flat arrays, and its crowd annotations (uncompressed RLE).
Each way of encoding is run ``--runs`` times; the table gives the median and the fastest
run, as CPU time of this process (``time.process_time``, steadier than wall time on a
loaded machine) divided by the number of annotations. Before timing, every way is checked
to give the same strings as pycocotools.

Ways: ``rlekernel.encode_polygons`` alone (strings left in one buffer, plus area and bbox);
``masks.encode_polygon_batch`` (validation, kernel, an Arrow string column: what ingest calls); the
same with the extension switched off (pycocotools' C functions through ctypes, the fallback);
pycocotools' Python API per annotation (``merge(frPyObjects(segmentation, h, w))``, what
``COCO.annToRLE`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time

import numpy as np
from pycocotools import mask as cmask

from pipeline import masks, rlekernel

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = pathlib.Path(os.environ.get("COCOLAKE_COCO_MINI", ROOT.parent / "shared" / "data" / "coco-mini"))
FILES = ("instances_train2017.json", "instances_val2017.json")


def load(repeat: int):
    polys, crowd = [], []
    for name in FILES:
        doc = json.loads((SAMPLES / "annotations" / name).read_text())
        size = {i["id"]: (i["height"], i["width"]) for i in doc["images"]}
        for a in doc["annotations"]:
            item = (a["segmentation"], *size[a["image_id"]])
            (polys if isinstance(a["segmentation"], list) else crowd).append(item)
    return polys * repeat, crowd * repeat


def flat_polygons(polys):
    parts = [p for s, _, _ in polys for p in s]
    coords = np.array([v for p in parts for v in p], np.float64)
    po = np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)
    ao = np.concatenate(([0], np.cumsum([len(s) for s, _, _ in polys]))).astype(np.int64)
    return coords, po, ao, np.array([h for _, h, _ in polys]), np.array([w for _, _, w in polys])


def flat_runs(crowd):
    runs = [s["counts"] for s, _, _ in crowd]
    offsets = np.concatenate(([0], np.cumsum([len(r) for r in runs]))).astype(np.int64)
    return (np.concatenate(runs).astype(np.int64), offsets,
            np.array([h for _, h, _ in crowd]), np.array([w for _, _, w in crowd]))


def measure(fn, n: int, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) / n * 1e6)
    return statistics.median(times), min(times)


def without_kernel(fn):
    def run():
        saved, rlekernel.AVAILABLE = rlekernel.AVAILABLE, False
        try:
            return fn()
        finally:
            rlekernel.AVAILABLE = saved
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=50, help="copies of coco-mini's annotations in the batch")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per way")
    args = ap.parse_args(argv)
    if not rlekernel.AVAILABLE:
        raise SystemExit("pipeline._rlekernel is not built: pip install -e . (or make venv) first")
    polys, crowd = load(args.repeat)
    P, R = flat_polygons(polys), flat_runs(crowd)
    few = len(polys) // args.repeat  # the Python API is timed on one copy: it is slow
    want = [cmask.merge(cmask.frPyObjects(s, h, w))["counts"].decode() for s, h, w in polys[:few]]
    ways = {
        "rlekernel.encode_polygons (flat arrays in, one string buffer out)":
            (lambda: rlekernel.encode_polygons(*P), len(polys)),
        "masks.encode_polygon_batch (validation + kernel + Arrow column)":
            (lambda: masks.encode_polygon_batch(*P), len(polys)),
        "masks.encode_polygon_batch without the extension (ctypes to pycocotools' C)":
            (without_kernel(lambda: masks.encode_polygon_batch(*P)), len(polys)),
        "pycocotools merge(frPyObjects(...)) per annotation (as annToRLE)":
            (lambda: [cmask.merge(cmask.frPyObjects(s, h, w)) for s, h, w in polys[:few]], few),
        "crowd: rlekernel.encode_runs":
            (lambda: rlekernel.encode_runs(*R), len(crowd)),
        "crowd: pycocotools frPyObjects(rle, h, w) per annotation":
            (lambda: [cmask.frPyObjects(s, h, w) for s, h, w in crowd[:max(len(crowd) // args.repeat, 1)]],
             max(len(crowd) // args.repeat, 1)),
    }
    assert rlekernel.encode_polygons(*P).strings()[:few] == want
    assert masks.encode_polygon_batch(*P).counts[:few].to_pylist() == want
    assert without_kernel(lambda: masks.encode_polygon_batch(*P))().counts[:few].to_pylist() == want
    assert rlekernel.encode_runs(*R).strings()[:len(crowd) // args.repeat] == [
        cmask.frPyObjects(s, h, w)["counts"].decode() for s, h, w in crowd[:len(crowd) // args.repeat]]
    print(f"{len(polys)} polygon annotations ({few} distinct), {len(crowd)} crowd; "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    print("| way | µs per annotation, median | fastest run |")
    print("|---|---|---|")
    for name, (fn, n) in ways.items():
        med, best = measure(fn, n, args.runs)
        print(f"| {name} | {med:.2f} | {best:.2f} |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

"""Stages: where the time of one ingest goes, next to the floor for each stage.

One ingest with 1 worker (Dask's synchronous scheduler, so everything runs in this one
process) of the base input, with the stage functions of ``pipeline`` wrapped from
outside by timers; nothing in ``pipeline`` is changed. Each stage's time is its *own*
time: a stage called inside another (the RLE encoder inside flatten, the reads inside the
scan) is subtracted from the caller. "other" is what no wrapper covers (Dask, the
duplicate-id check, building the graph).

| stage | functions timed |
|---|---|
| read | ``split.iter_blocks`` (the scan's reads), ``sources.read_range`` (the chunks' reads) |
| split/scan | ``split.scan_document`` |
| parse: polygons | ``_jsonpoly.extract`` (C: polygon and bbox numbers from the bytes into float64 arrays) |
| parse: rest | ``parse.parse_chunk``, ``parse.parse_with_geometry`` (orjson on the rest of each record) |
| flatten | ``flatten.flatten_*`` (validation, Arrow columns) |
| RLE kernel | ``rlekernel.encode_polygons``, ``rlekernel.encode_runs`` (C: counts, area, bbox of a whole chunk) |
| RLE checks | ``masks``: ``encode_polygon_batch``, ``encode_rle_batch`` (validation, the counts as Arrow columns) |
| write | ``warehouse.write_part`` (Parquet, zstd) |
| commit | ``Warehouse.commit`` (manifest, clean-up) |

Floors: read = ``cat F > /dev/null`` and a Python read in 16 MB blocks (file in the page
cache); split/scan = one NumPy pass over the bytes (finding the quotes: memory speed), the
least a structural scan does; RLE kernel = the C kernel alone over every polygon
annotation of the output as one batch of flat arrays (no validation, strings left in its buffer;
pycocotools' own C encoder, ``frPyObjects`` + ``merge`` on NumPy polygons, is given beside
it for scale); parse = the rate per number and per byte (no lower bound is measured);
write = writing as many bytes as the Parquet output to a file.

Runs as a module (prints one JSON object)::

    python -m benchmarks.cases.stages --source F --warehouse W
"""

from __future__ import annotations

import argparse
import collections
import functools
import inspect
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from . import MB, Bench, CaseResult

# (module, attribute, stage); "Class.method" patches a method
TIMED = (
    ("pipeline.ingest.scan", "iter_blocks", "read"),
    ("pipeline.ingest.sources", "read_range", "read"),
    ("pipeline.ingest.scan", "scan_document", "split/scan"),
    ("pipeline._jsonpoly", "extract", "parse: polygons"),
    ("pipeline.ingest.parse", "parse_chunk", "parse: rest"),
    ("pipeline.ingest.parse", "parse_with_geometry", "parse: rest"),
    ("pipeline.ingest.flatten", "flatten_images", "flatten"),
    ("pipeline.ingest.flatten", "flatten_annotations", "flatten"),
    ("pipeline.ingest.flatten", "flatten_categories", "flatten"),
    ("pipeline.ingest.flatten", "flatten_licenses", "flatten"),
    ("pipeline.rlekernel", "encode_polygons", "RLE kernel"),
    ("pipeline.rlekernel", "encode_runs", "RLE kernel"),
    ("pipeline.masks", "encode_polygon_batch", "RLE checks"),
    ("pipeline.masks", "encode_rle_batch", "RLE checks"),
    ("pipeline.warehouse", "write_part", "write"),
    ("pipeline.warehouse", "Warehouse.commit", "commit"),
)
STAGES = ("read", "split/scan", "parse: polygons", "parse: rest", "flatten", "RLE kernel", "RLE checks",
          "write", "commit", "other")
BLOCK = 16 * MB


class Clock:
    """Own time per stage: time spent in a nested timed call is taken off its caller."""

    def __init__(self):
        self.own: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()
        self._stack: list[list[float]] = []  # [start, time of timed calls inside]

    def _enter(self) -> None:
        self._stack.append([time.perf_counter(), 0.0])

    def _exit(self, stage: str) -> None:
        start, inner = self._stack.pop()
        elapsed = time.perf_counter() - start
        self.own[stage] += elapsed - inner
        self.calls[stage] += 1
        if self._stack:
            self._stack[-1][1] += elapsed

    def wrap(self, stage: str, fn):
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen_wrapper(*args, **kwargs):
                it = fn(*args, **kwargs)
                while True:
                    self._enter()
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                    finally:
                        self._exit(stage)
                    yield item
            return gen_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            self._enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._exit(stage)
        return wrapper


def instrument(clock: Clock) -> list[str]:
    """Wrap every TIMED function wherever pipeline modules refer to it; return what is missing."""
    import importlib

    import pipeline.ingest.run  # noqa: F401  (loads every module the ingest uses)

    missing = []
    for module_name, attr, stage in TIMED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(f"{module_name}.{attr}")
            continue
        if "." in attr:
            cls_name, meth = attr.split(".")
            cls = getattr(module, cls_name, None)
            if cls is None or not hasattr(cls, meth):
                missing.append(f"{module_name}.{attr}")
                continue
            setattr(cls, meth, clock.wrap(stage, getattr(cls, meth)))
            continue
        original = getattr(module, attr, None)
        if original is None:
            missing.append(f"{module_name}.{attr}")
            continue
        wrapped = clock.wrap(stage, original)
        # `from .x import f` copies the reference: replace it in every pipeline module
        for name, mod in list(sys.modules.items()):
            if (name == "pipeline" or name.startswith("pipeline.")) and mod is not None:
                for key, value in list(vars(mod).items()):
                    if value is original:
                        setattr(mod, key, wrapped)
    return missing


# ---------------------------------------------------------------------------- floors


def floor_read(source: str) -> dict:
    t0 = time.perf_counter()
    subprocess.run(["cat", source], stdout=subprocess.DEVNULL, check=True)
    cat_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(source, "rb", buffering=0) as f:
        while f.read(BLOCK):
            pass
    return {"cat_s": cat_s, "python_s": time.perf_counter() - t0}


def floor_scan(source: str) -> float:
    import numpy as np

    spent = 0.0
    with open(source, "rb", buffering=0) as f:
        while block := f.read(BLOCK):
            t0 = time.perf_counter()
            np.count_nonzero(np.frombuffer(block, np.uint8) == 34)
            spent += time.perf_counter() - t0
    return spent


def floor_rle(warehouse: str, dataset: str) -> dict:
    """The C kernel alone, one call per part file (a chunk's batch), over every polygon
    annotation of the output as flat arrays; and pycocotools frPyObjects + merge per
    annotation on the same polygons in NumPy, for scale."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pycocotools import mask as mask_utils

    from pipeline import rlekernel

    files = sorted(pathlib.Path(warehouse, dataset, "annotations").rglob("*.parquet"))
    if not files:
        return {"problem": "no annotation parts"}
    names = pq.read_schema(files[0]).names
    if "polygons" not in names or "rle_size" not in names:
        return {"problem": "the annotations table has no polygons / rle_size columns"}
    batches, items = [], []
    for path in files:
        t = pq.read_table(path, columns=["polygons", "rle_size"])
        t = t.filter(pc.and_(pc.is_valid(t["polygons"]), pc.greater(pc.list_value_length(t["polygons"]), 0)))
        polys = t["polygons"].combine_chunks()
        hw = np.asarray(t["rle_size"].to_pylist(), dtype=np.int64).reshape(-1, 2)
        outer = polys.offsets.to_numpy().astype(np.int64)
        inner = polys.values.offsets.to_numpy().astype(np.int64)
        coords = polys.values.values.to_numpy()
        batches.append((coords, inner, outer, hw[:, 0].copy(), hw[:, 1].copy()))
        for i, (h, w) in enumerate(hw.tolist()):
            items.append(([coords[inner[k]:inner[k + 1]] for k in range(outer[i], outer[i + 1])], h, w))
    n = len(items)
    out = {"annotations": n, "coordinates": int(sum(len(b[0]) for b in batches))}
    if rlekernel.AVAILABLE:
        encode = getattr(rlekernel.encode_polygons, "__wrapped__", rlekernel.encode_polygons)
        t0 = time.perf_counter()
        for batch in batches:
            encode(*batch)
        spent = time.perf_counter() - t0
        out["kernel"] = {"seconds": spent, "us_per_annotation": spent / n * 1e6 if n else 0.0}
    t0 = time.perf_counter()
    for parts, h, w in items:
        mask_utils.merge(mask_utils.frPyObjects(parts, h, w))
    spent = time.perf_counter() - t0
    out["pycocotools"] = {"seconds": spent, "us_per_annotation": spent / n * 1e6 if n else 0.0}
    return out


def floor_write(nbytes: int, directory: str) -> float:
    path = os.path.join(directory, "floor-write.bin")
    block = b"\0" * BLOCK
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        left = nbytes
        while left > 0:
            left -= f.write(block[:min(BLOCK, left)])
    spent = time.perf_counter() - t0
    os.remove(path)
    return spent


def breakdown(source: str, warehouse: str, dataset: str = "stages") -> dict:
    clock = Clock()
    missing = instrument(clock)
    from pipeline.ingest.run import run_ingest

    shutil.rmtree(warehouse, ignore_errors=True)
    t0 = time.perf_counter()
    report = run_ingest([source], warehouse=warehouse, dataset=dataset, workers=1)
    total = time.perf_counter() - t0
    own = dict(clock.own)
    own["other"] = total - sum(own.values())
    parquet_bytes = sum(p.stat().st_size for p in pathlib.Path(warehouse, dataset).rglob("*.parquet"))
    floors = {"read": floor_read(source), "split/scan": floor_scan(source),
              "RLE": floor_rle(warehouse, dataset), "write": floor_write(parquet_bytes, warehouse)}
    rows = {f"{t}/{s}": n for (t, s), n in report.rows.items()}
    shutil.rmtree(warehouse, ignore_errors=True)
    return {"total_s": total, "own_s": own, "calls": dict(clock.calls), "missing": missing,
            "floors": floors, "rows": rows, "input_bytes": os.path.getsize(source),
            "parquet_bytes": parquet_bytes}


# ---------------------------------------------------------------------------- the case


def run(bench: Bench) -> CaseResult:
    source = bench.input()
    result = CaseResult("stages", "Stage breakdown of one ingest (1 worker, in one process)")
    bench.warm(source)
    argv = [bench.python, "-m", "benchmarks.cases.stages", "--source", bench.rel(source),
            "--warehouse", bench.rel(bench.work / "wh-stages")]
    try:
        data = bench.python_json(argv, "stages.log")
    except RuntimeError as err:
        result.extra += ["", f"Not measured: {err}"]
        return result
    result.extra += render(data, bench.shown(argv))
    return result


def render(d: dict, command: str) -> list[str]:
    total = d["total_s"]
    fl = d["floors"]
    anns = sum(n for k, n in d["rows"].items() if k.startswith("annotations/"))
    floor_text = {
        "read": (fl["read"]["python_s"], f"Python read in 16 MB blocks; `cat` {fl['read']['cat_s']:.2f} s "
                 f"({d['input_bytes'] / MB / max(fl['read']['cat_s'], 1e-9):.0f} MB/s)"),
        "split/scan": (fl["split/scan"], "one NumPy pass over the bytes"),
        "write": (fl["write"], f"writing {d['parquet_bytes'] / MB:.0f} MB (the Parquet output's size)"),
    }
    rle = fl["RLE"]
    if "problem" in rle:
        floor_text["RLE kernel"] = (None, f"not measured: {rle['problem']}")
    else:
        coco = rle["pycocotools"]
        scale = (f"pycocotools' C (frPyObjects + merge on NumPy polygons): {coco['seconds']:.2f} s, "
                 f"{coco['us_per_annotation']:.1f} µs each")
        kernel = rle.get("kernel")
        floor_text["RLE kernel"] = (
            (kernel["seconds"], f"the kernel alone, a batch per part file: {rle['annotations']} polygon annotations, "
             f"{kernel['us_per_annotation']:.1f} µs each; {scale}") if kernel
            else (coco["seconds"], f"{scale} (the extension is not built)"))
        numbers = rle["coordinates"] + 4 * anns
        t = d["own_s"].get("parse: polygons", 0.0)
        if numbers and t:
            floor_text["parse: polygons"] = (None, f"{t / numbers * 1e9:.0f} ns per number "
                                             f"({rle['coordinates']} coordinates, {anns} boxes)")
    t = d["own_s"].get("parse: rest", 0.0)
    if t:
        floor_text["parse: rest"] = (None, f"{d['input_bytes'] / MB / t:.0f} MB/s of input")
    rows = [
        "",
        f"{anns} annotations ingested in {total:.2f} s with the timers on (they add a little). "
        f"Command: `{command}`.",
        "",
        "| stage | own time | share | floor | floor is |",
        "|---|---|---|---|---|",
    ]
    for stage in STAGES:
        t = d["own_s"].get(stage, 0.0)
        f_s, f_what = floor_text.get(stage, (None, "—"))
        rows.append(f"| {stage} | {t:.2f} s | {t / total:.0%} | "
                    f"{'—' if f_s is None else f'{f_s:.2f} s'} | {f_what} |")
    rows.append(f"| total | {total:.2f} s | 100% | | |")
    if d["missing"]:
        rows += ["", "Not instrumented (not in this version of pipeline): " + ", ".join(d["missing"]) + "."]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cases.stages",
                                description="Time the stages of one ingest and their floors; print JSON.")
    p.add_argument("--source", required=True, help="a COCO instances JSON file")
    p.add_argument("--warehouse", required=True, help="a scratch directory (emptied)")
    args = p.parse_args(argv)
    print(json.dumps(breakdown(args.source, args.warehouse)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

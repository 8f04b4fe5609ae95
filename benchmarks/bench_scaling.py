"""How an ingest scales with worker processes, and what one task costs: the numbers behind
the README's "Running on a cluster".

    python -m benchmarks.bench_scaling                  # both parts; appends to benchmarks/RESULTS.md
    python -m benchmarks.bench_scaling --what costs     # or: scaling
    python -m benchmarks.bench_scaling --quick          # small inputs, a smoke run (nothing written)

Inputs, generated once under ``--data`` (default: ``cocolake-bench-scaling`` in the system's
temporary directory):

- ``instances|person_keypoints|captions_train2017.json``: coco-mini's real train2017 records
  repeated with shifted ids until each file has ``--mb`` MB; ``boxes_train2017.json``: the
  instances without segmentation, with Objects365's ``isfake`` / ``isreflected`` keys;
- ``sa1b/``: an SA-1B-like per-image set: ``--sa-files`` files ``{"image", "annotations"}``,
  ``--sa-masks`` masks each on a 1500×2250 image, compressed RLE of jittered ellipses.

Scaling: the wall time of the whole ingest (``run_ingest``) of the instances file and of
the per-image set on a ``LocalCluster`` of 1, then 2 single-threaded worker processes, and
with the synchronous scheduler (``--workers 1``).

Costs: each task kind in a fresh process (``--child``): CPU seconds (user + system) and
peak RSS (``VmHWM``) of one structural scan of a whole file, one 16 MB chunk of
``images``, one 16 MB chunk of ``annotations`` per kind, one 16 MB batch of per-image files.
CPU time, unlike wall time, hardly moves when other processes share the machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
COCO_MINI = ROOT.parent / "shared" / "data" / "coco-mini" / "annotations"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- bench_scaling:begin -->", "<!-- bench_scaling:end -->"
KINDS = ("instances", "person_keypoints", "captions", "boxes")
MB = 1 << 20
IMAGE_STRIDE = 10**6  # COCO image ids are below 600 000
ANN_STRIDE = 10**13  # crowd annotation ids have 12 digits


# ---------------------------------------------------------------------------- inputs


def scaled(kind: str, out: Path, mb: float) -> Path:
    """coco-mini's ``<kind>_train2017.json`` repeated (ids shifted) to about ``mb`` MB."""
    path = out / f"{kind}_train2017.json"
    if path.exists():
        return path
    doc = orjson.loads((COCO_MINI / f"{'instances' if kind == 'boxes' else kind}_train2017.json").read_bytes())
    if kind == "boxes":  # boxes only, with Objects365's extra keys
        doc["annotations"] = [{**{k: v for k, v in a.items() if k != "segmentation"}, "isfake": 0, "isreflected": 0}
                              for a in doc["annotations"]]
    base = len(orjson.dumps({"images": doc["images"], "annotations": doc["annotations"]}))
    copies = max(1, math.ceil(mb * MB / base))
    images, anns = [], []
    for r in range(copies):
        images += [{**i, "id": i["id"] + r * IMAGE_STRIDE, "file_name": f"{r}_{i['file_name']}"} for i in doc["images"]]
        anns += [{**a, "id": a["id"] + r * ANN_STRIDE, "image_id": a["image_id"] + r * IMAGE_STRIDE}
                 for a in doc["annotations"]]
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({**doc, "images": images, "annotations": anns}))
    tmp.rename(path)
    return path


def _ellipse_rle(rng, h: int, w: int) -> tuple[list[int], list[float], int]:
    """Uncompressed RLE counts (column-major) of a jittered ellipse, its bbox and its area."""
    rx, ry = rng.uniform(10, w / 6), rng.uniform(10, h / 6)
    cx, cy = rng.uniform(rx, w - rx), rng.uniform(ry, h - ry)
    xs = np.arange(int(cx - rx) + 1, int(cx + rx))
    half = ry * np.sqrt(np.clip(1 - ((xs - cx) / rx) ** 2, 0, 1))
    jitter = np.cumsum(rng.integers(-2, 3, size=(2, xs.size)), axis=1)  # ragged edges, as real masks have
    y0 = np.clip(np.round(cy - half).astype(int) + jitter[0], 1, h - 2)
    y1 = np.clip(np.round(cy + half).astype(int) + jitter[1], y0 + 1, h - 1)
    starts = xs * h + y0
    ends = xs * h + y1
    counts = np.empty(2 * xs.size + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = h * w - ends[-1]
    bbox = [float(xs[0]), float(y0.min()), float(xs.size), float(y1.max() - y0.min())]
    return counts.tolist(), bbox, int((ends - starts).sum())


def sa1b_set(out: Path, files: int, masks: int, seed: int = 0) -> Path:
    """An SA-1B-like per-image set (``sa_<id>.json``), as SA-1B publishes it."""
    from pycocotools import mask as mask_utils

    root = out / f"sa1b-{files}x{masks}"
    if (root / ".done").exists():
        return root
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        h, w = 1500, 2250
        anns = []
        for k in range(max(1, int(rng.poisson(masks)))):
            counts, bbox, area = _ellipse_rle(rng, h, w)
            rle = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
            anns.append({"bbox": bbox, "area": area, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                         "predicted_iou": round(float(rng.uniform(0.8, 1)), 6),
                         "point_coords": [[round(float(rng.uniform(0, w)), 2), round(float(rng.uniform(0, h)), 2)]],
                         "crop_box": [0.0, 0.0, float(w), float(h)], "id": i * 1000 + k,
                         "stability_score": round(float(rng.uniform(0.9, 1)), 6)})
        doc = {"image": {"image_id": i + 1, "width": w, "height": h, "file_name": f"sa_{i + 1}.jpg"}, "annotations": anns}
        (root / f"sa_{i + 1}.json").write_bytes(orjson.dumps(doc))
    (root / ".done").write_text("")
    return root


# ---------------------------------------------------------------------------- measuring one task


def _child(args) -> dict:
    """Run one task in this (fresh) process; CPU seconds and peak RSS."""
    import psutil

    from pipeline.ingest import filesets as per_image, sources
    from pipeline.ingest.plan import IngestOptions, plan_file
    from pipeline.ingest.tasks import ChunkTask, ingest_chunk

    opts = IngestOptions(chunk_bytes=int(args.chunk_mb * MB))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    state = work / (Path(args.file).name + ".plan.pickle")
    task_fn = None
    if args.child == "scan":
        [sf] = sources.resolve([args.file], cache_dir=str(work))
        task_fn = lambda: plan_file(sf, opts)  # noqa: E731
    elif args.child == "batch":
        [fileset], _ = per_image.find_sets([args.file], chunk_bytes=opts.chunk_bytes, batch_files=10**6, split=None)
        files = fileset.batches(opts.chunk_bytes, 10**6)[0]
        targets = tuple((t, str(work / "batch" / f"{t}.parquet")) for t in per_image.BATCH_TABLES + ("rejects",))
        task = per_image.BatchTask("sa1b", files, targets)
        size = sum(f.size for f in files)
        task_fn = lambda: per_image.ingest_batch(task)  # noqa: E731
    else:
        plan, sizes = pickle.loads(state.read_bytes())
        start, end, first = plan.chunks[args.child][0]
        tables = {"images": ("images",), "captions": ("captions",), "person_keypoints": ("annotations", "keypoints")}
        names = tables["images"] if args.child == "images" else tables.get(plan.kind, ("annotations",))
        targets = tuple((t, str(work / args.child / f"{t}.parquet")) for t in names + ("rejects",))
        task = ChunkTask(plan.source, args.child, start, end, first, plan.context, targets,
                         sub_batch_bytes=opts.chunk_bytes)
        size = end - start
        task_fn = lambda: ingest_chunk(task, None if args.child == "images" else sizes)  # noqa: E731
    base_rss = psutil.Process().memory_info().rss
    t0, w0 = time.process_time(), time.perf_counter()
    result = task_fn()
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    peak = _high_water_mark()
    out = {"task": args.child, "file": Path(args.file).name, "cpu_s": cpu, "wall_s": wall, "peak_rss": peak,
           "base_rss": base_rss}
    if args.child == "scan":
        sf_size = os.path.getsize(args.file)
        out.update(bytes=sf_size, chunks={k: len(v) for k, v in result.chunks.items()})
        # the next children need the plan and the image sizes; ingest the images here, untimed
        from pipeline.ingest.flatten import ImageSizes

        parts = []
        for c_i, (a, b, fi) in enumerate(result.chunks["images"]):
            t = ChunkTask(result.source, "images", a, b, fi, result.context,
                          (("images", str(work / "prep" / f"{c_i}.parquet")), ("rejects", str(work / "prep" / "r.parquet"))))
            parts.append(ingest_chunk(t).image_sizes)
        state.write_bytes(pickle.dumps((result, ImageSizes.merge(parts, result.id_types.image))))
    elif args.child == "batch":
        out.update(bytes=size, files=len(files), masks=result.rows.get("annotations", 0))
    else:
        out.update(bytes=size, rows=result.rows)
    return out


def _high_water_mark() -> int:
    """Peak RSS of this process (VmHWM). Not ``ru_maxrss``: Linux carries that across exec from
    the parent, so a child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(what: str, file: Path, work: Path, chunk_mb: float = 16) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_scaling", "--child", what, "--file", str(file),
                           "--work", str(work), "--chunk-mb", str(chunk_mb)],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def costs(data: Path, mb: float, sa_dir: Path) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="costs-", dir=data))
    rows = []
    for kind in KINDS:
        path = scaled(kind, data, mb)
        rows.append(run_child("scan", path, work))
        if kind == "instances":
            rows.append(run_child("images", path, work))
        rows.append(run_child("annotations", path, work))
    rows.append(run_child("batch", sa_dir, work))
    return rows


# ---------------------------------------------------------------------------- scaling


def _ingest_once(source: Path, procs: int | None, data: Path) -> tuple[float, float | None, float | None]:
    """(wall seconds, CPU seconds of the workers, largest worker RSS) of one whole ingest."""
    import dask
    from distributed import Client, LocalCluster

    from pipeline.ingest.run import run_ingest

    wh = Path(tempfile.mkdtemp(prefix="wh-", dir=data))
    if procs is None:
        t0 = time.perf_counter()
        run_ingest([str(source)], warehouse=str(wh), dataset="b", workers=1, split="train")
        return time.perf_counter() - t0, None, None

    def usage():
        import psutil

        p = psutil.Process()
        return sum(p.cpu_times()[:2]), p.memory_info().rss

    with dask.config.set({"distributed.worker.daemon": False}), \
            LocalCluster(n_workers=procs, threads_per_worker=1, processes=True, dashboard_address=None,
                         silence_logs=40) as cluster, Client(cluster) as client:
        before = client.run(usage)
        t0 = time.perf_counter()
        run_ingest([str(source)], warehouse=str(wh), dataset="b", scheduler=cluster.scheduler_address, split="train")
        wall = time.perf_counter() - t0
        after = client.run(usage)
    return wall, sum(after[w][0] - before[w][0] for w in after), max(v[1] for v in after.values())


def scaling(data: Path, mb: float, sa_dir: Path, runs: int) -> list[dict]:
    """Each setup ``runs`` times, interleaved, so that a busy moment hits every setup alike."""
    src = scaled("instances", data, mb)
    rows = []
    for name, source in (("instances", src), ("per-image set", sa_dir)):
        size = os.path.getsize(source) if source.is_file() else sum(p.stat().st_size for p in source.glob("*.json"))
        found: dict = {}
        for _ in range(runs):
            for procs in (None, 1, 2):
                load = os.getloadavg()[0]
                wall, cpu, rss = _ingest_once(source, procs, data)
                found.setdefault(procs, []).append((wall, cpu, rss, load))
                print(f"{name}: {procs or 'synchronous'}: {wall:.1f} s (load {load:.1f})", file=sys.stderr)
        for procs, got in found.items():
            walls = sorted(g[0] for g in got)
            rows.append({
                "input": name, "bytes": size,
                "setup": "synchronous (--workers 1)" if procs is None else
                         f"{procs} worker process{'es' if procs > 1 else ''}",
                "wall_s": walls[0], "wall_median_s": walls[len(walls) // 2],
                "worker_cpu_s": min((g[1] for g in got), default=None) if procs else None,
                "worker_rss_after": max(g[2] for g in got) if procs else None,
                "load": max(g[3] for g in got),
            })
    return rows


# ---------------------------------------------------------------------------- report


def _mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


def report(cost_rows: list[dict], scale_rows: list[dict], args) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [BEGIN, "## Scaling with worker processes, and the cost of one task", "",
             f"Generated by `python -m benchmarks.bench_scaling` (`--mb {args.mb:g} --sa-files {args.sa_files} "
             f"--sa-masks {args.sa_masks} --runs {args.runs}`) on {now}; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}. The README's sizing table "
             "is computed from these numbers.", ""]
    if scale_rows:
        lines += ["### Whole ingest: 1 vs 2 worker processes", "",
                  f"Wall time of `run_ingest` (scan, chunk tasks, commit) on a `LocalCluster` of single-threaded "
                  f"worker processes: the best and the median of {args.runs} runs, the setups interleaved; the "
                  "workers' CPU seconds (user + system, best run); the highest load average (1 min) seen at the "
                  "start of a run: other processes on the machine take cores from the workers.", "",
                  "| input | setup | wall, best | wall, median | MB/s (best) | speed-up vs 1 process | worker CPU | "
                  "load | worker RSS after |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in scale_rows:
            one = next(x for x in scale_rows if x["input"] == r["input"] and x["setup"].startswith("1 worker"))
            rss = _mb(r["worker_rss_after"]) if r["worker_rss_after"] else "–"
            cpu = f"{r['worker_cpu_s']:.1f} s" if r["worker_cpu_s"] else "–"
            lines.append(f"| {r['input']} ({_mb(r['bytes'])}) | {r['setup']} | {r['wall_s']:.1f} s | "
                         f"{r['wall_median_s']:.1f} s | {r['bytes'] / MB / r['wall_s']:.1f} | "
                         f"{one['wall_s'] / r['wall_s']:.2f}× | {cpu} | {r['load']:.1f} | {rss} |")
        lines.append("")
    if cost_rows:
        lines += ["### One task, in a fresh process", "",
                  "CPU seconds (user + system) of the task alone, and the process's peak RSS (`VmHWM`; "
                  "the RSS before the task — Python, NumPy, PyArrow, the inputs — is in the last column).", "",
                  "| task | input | bytes | CPU | MB/s per core | peak RSS | RSS before | notes |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in cost_rows:
            note = ""
            if r["task"] == "scan":
                note = "chunks: " + ", ".join(f"{k} {v}" for k, v in sorted(r["chunks"].items()))
            elif r["task"] == "batch":
                note = f"{r['files']} files, {r['masks']} masks ({r['bytes'] / max(r['masks'], 1):.0f} B/mask)"
            elif "rows" in r:
                note = ", ".join(f"{k} {v}" for k, v in sorted(r["rows"].items()))
            lines.append(f"| {r['task']} | {r['file']} | {_mb(r['bytes'])} | {r['cpu_s']:.2f} s | "
                         f"{r['bytes'] / MB / r['cpu_s']:.1f} | {_mb(r['peak_rss'])} | {_mb(r['base_rss'])} | {note} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_results(text: str) -> None:
    """Replace this benchmark's own section of RESULTS.md, or append it; other sections stay."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=("all", "scaling", "costs"), default="all")
    p.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "cocolake-bench-scaling"))
    p.add_argument("--mb", type=float, default=64, help="MB of each scaled train2017 file")
    p.add_argument("--sa-files", type=int, default=1500, help="files of the per-image set")
    p.add_argument("--sa-masks", type=int, default=100, help="masks per file (mean)")
    p.add_argument("--runs", type=int, default=3, help="runs of each scaling setup")
    p.add_argument("--quick", action="store_true", help="small inputs; print, do not write RESULTS.md")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--chunk-mb", type=float, default=16, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    if args.quick:
        args.mb, args.sa_files, args.sa_masks, args.runs = 4, 60, 20, 1
        args.data = str(Path(args.data) / "quick")
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    sa_dir = sa1b_set(data, args.sa_files, args.sa_masks)
    cost_rows = costs(data, args.mb, sa_dir) if args.what in ("all", "costs") else []
    scale_rows = scaling(data, args.mb, sa_dir, args.runs) if args.what in ("all", "scaling") else []
    text = report(cost_rows, scale_rows, args)
    print(text)
    (data / "results.json").write_text(json.dumps({"costs": cost_rows, "scaling": scale_rows}, indent=1))
    if not args.quick:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

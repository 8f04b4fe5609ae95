"""Evaluation benchmark: ``cocolake evaluate`` against pycocotools' COCOeval (and faster-coco-eval).

``python benchmarks/bench_evaluate.py [--images 5000] [--types bbox,segm,keypoints]``

Builds val2017-scale ground truth with ``../shared/bench/make_scaled.py`` (instances and
person keypoints, ``--images`` images), detections made from it (jittered boxes, shifted
masks and keypoints, misses, duplicates, background detections up to ``--dets`` per image
for boxes), ingests both into a warehouse under ``benchmarks/data/eval/`` (git-ignored),
then measures each evaluator in a fresh process: wall time and peak RSS of that process,
and checks that the 12 (10) numbers agree. pycocotools and faster-coco-eval start from the
JSON files, cocolake from the warehouse; the evaluation itself (``evaluate`` +
``accumulate`` + ``summarize``) is also timed apart from loading.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "eval"
MAKE_SCALED = ROOT.parent / "shared" / "bench" / "make_scaled.py"
SAMPLES = ROOT.parent / "shared" / "data" / "coco-mini" / "annotations"
GT = {"bbox": "instances", "segm": "instances", "keypoints": "person_keypoints"}
TOOLS = ("pycocotools", "faster-coco-eval", "cocolake")


# ---------------------------------------------------------------------------- inputs


def gt_path(kind: str, images: int) -> pathlib.Path:
    return DATA / f"scaled{images}_{kind}_val2017.json"


def results_path(iou_type: str, images: int) -> pathlib.Path:
    return DATA / f"results{images}_{iou_type}.json"


def make_detections(gt: dict, iou_type: str, per_image: int, seed: int = 0) -> list[dict]:
    from pycocotools import mask as cm

    rng = np.random.default_rng(seed)
    images = {i["id"]: i for i in gt["images"]}
    by_image: dict = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cats = [c["id"] for c in gt["categories"]]
    out = []
    for iid, im in images.items():
        dets = []
        for a in by_image.get(iid, []):
            if rng.random() < 0.15:
                continue
            for _ in range(1 + int(rng.random() < 0.2)):
                x, y, w, h = a["bbox"]
                dx, dy = rng.normal(0, 0.08 * w + 1), rng.normal(0, 0.08 * h + 1)
                d = {"image_id": iid, "category_id": a["category_id"], "score": float(rng.random())}
                if iou_type == "keypoints":
                    kp = np.array(a["keypoints"], float).reshape(-1, 3)
                    kp[:, 0] += rng.normal(0, 0.03 * w + 1, len(kp)) + dx * 0.2
                    kp[:, 1] += rng.normal(0, 0.03 * h + 1, len(kp)) + dy * 0.2
                    kp[:, 2] = 1
                    d["keypoints"] = np.round(kp.ravel(), 2).tolist()
                else:
                    d["bbox"] = [round(v, 2) for v in (x + dx, y + dy, w * np.exp(rng.normal(0, .1)),
                                                       h * np.exp(rng.normal(0, .1)))]
                    if iou_type == "segm":
                        seg = a["segmentation"]
                        if isinstance(seg, list):
                            poly = [[v + (dx if k % 2 == 0 else dy) for k, v in enumerate(p)] for p in seg]
                            rle = cm.merge(cm.frPyObjects(poly, im["height"], im["width"]))
                        else:
                            rle = cm.frPyObjects(seg, im["height"], im["width"])
                        d["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                dets.append(d)
        while len(dets) < per_image:  # background detections, lower scores
            w, h = rng.uniform(8, im["width"] / 2), rng.uniform(8, im["height"] / 2)
            x, y = rng.uniform(0, im["width"] - w), rng.uniform(0, im["height"] - h)
            d = {"image_id": iid, "category_id": int(rng.choice(cats)), "score": float(rng.random() * 0.5)}
            if iou_type == "keypoints":
                d["keypoints"] = np.round(np.column_stack(
                    [x + rng.random(17) * w, y + rng.random(17) * h, np.ones(17)]).ravel(), 2).tolist()
            else:
                d["bbox"] = [round(v, 2) for v in (x, y, w, h)]
                if iou_type == "segm":
                    rle = cm.frPyObjects([[x, y, x + w, y, x + w / 2, y + h]], im["height"], im["width"])[0]
                    d["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            dets.append(d)
        out += dets
    return out


def prepare(images: int, types: list[str], dets: dict[str, int]) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for kind in sorted({GT[t] for t in types}):
        path = gt_path(kind, images)
        if not path.exists():
            srcs = sorted(str(p) for p in SAMPLES.glob(f"{kind}_*.json"))
            subprocess.run([sys.executable, str(MAKE_SCALED), str(path), str(images), *srcs], check=True)
    for t in types:
        path = results_path(t, images)
        if not path.exists():
            gt = json.loads(gt_path(GT[t], images).read_text())
            path.write_text(json.dumps(make_detections(gt, t, dets[t]), separators=(",", ":")))
    from pipeline.evaluate.detections import run_ingest_results
    from pipeline.ingest.run import run_ingest
    from pipeline.warehouse import Warehouse

    wh = str(DATA / "warehouse")
    dataset = f"val{images}"
    m = Warehouse(wh, dataset).read_manifest()
    if m is None:
        t0 = time.perf_counter()
        run_ingest([str(gt_path(k, images)) for k in sorted({GT[t] for t in types})], warehouse=wh,
                   dataset=dataset, workers=1)
        print(f"ground truth ingested in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        m = Warehouse(wh, dataset).read_manifest()
    for t in types:
        if t not in m.runs():
            t0 = time.perf_counter()
            run_ingest_results(str(results_path(t, images)), run=t, warehouse=wh, dataset=dataset, workers=1)
            print(f"results {t} ingested in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


# ---------------------------------------------------------------------------- one measurement (a child process)


def child(tool: str, iou_type: str, images: int) -> dict:
    t0 = time.perf_counter()
    if tool == "cocolake":
        from pipeline.evaluate.metrics import evaluate
        from pipeline.query.views import connect

        con = connect(str(DATA / "warehouse"), f"val{images}")
        t1 = time.perf_counter()
        stats = evaluate(con, iou_type, iou_type=iou_type).stats
    else:
        if tool == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(gt_path(GT[iou_type], images)))
            dt = gt.loadRes(str(results_path(iou_type, images)))
            t1 = time.perf_counter()
            e = COCOeval(gt, dt, iou_type)
            e.evaluate()
            e.accumulate()
            e.summarize()
        stats = e.stats
    t2 = time.perf_counter()
    return {"total": t2 - t0, "load": t1 - t0, "eval": t2 - t1, "stats": [float(x) for x in stats],
            "peak_gb": peak_rss_gb()}


def peak_rss_gb() -> float:
    """Peak resident memory of this process since its exec (VmHWM; ru_maxrss would include the parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(tool: str, iou_type: str, images: int, repeat: int) -> dict | None:
    runs = []
    for _ in range(repeat):
        p = subprocess.run([sys.executable, __file__, "--child", tool, "--types", iou_type, "--images", str(images)],
                           capture_output=True, text=True, cwd=ROOT)
        if p.returncode:
            print(f"{tool} {iou_type} failed:\n{p.stderr[-2000:]}", file=sys.stderr)
            return None
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["total"])
    best["peak_gb"] = max(r["peak_gb"] for r in runs)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--types", default="bbox,segm,keypoints")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement (the fastest counts)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    types = args.types.split(",")
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(child(args.child, types[0], args.images)))
        return 0
    prepare(args.images, types, {"bbox": 100, "segm": 20, "keypoints": 20})
    lines = ["| IoU type | detections | tool | total | load | evaluate | peak RSS | total vs cocolake | "
             "max abs diff of the stats vs pycocotools |", "|---|---|---|---|---|---|---|---|---|"]
    for t in types:
        n = len(json.loads(results_path(t, args.images).read_text()))
        got = {tool: measure(tool, t, args.images, args.repeat) for tool in args.tools.split(",")}
        ours = got.get("cocolake")
        ref = got.get("pycocotools")
        for tool, r in got.items():
            if r is None:
                lines.append(f"| {t} | {n} | {tool} | failed | | | | | |")
                continue
            ratio = f"{r['total'] / ours['total']:.1f}x" if ours else ""
            diff = f"{max(abs(a - b) for a, b in zip(r['stats'], ref['stats'])):.1e}" if ref else ""
            lines.append(f"| {t} | {n} | {tool} | {r['total']:.2f} s | {r['load']:.2f} s | {r['eval']:.2f} s | "
                         f"{r['peak_gb']:.2f} GB | {ratio} | {diff} |")
        print("\n".join(lines[-len(got):]), file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

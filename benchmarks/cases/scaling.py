"""Scaling: the same kind of file at 0.5×, 1× and 2× the base size, ingested with 2 workers.

Wall time should grow with the input; peak memory should not (it is bounded by the chunk
size): the target is at most 1.3× the peak memory for 2× the input. The 1× row reuses
the ingest case's 2-worker runs when that case ran in the same invocation.
"""

from __future__ import annotations

import os

from . import GB, MB, Bench, CaseResult, Command

FACTORS = (0.5, 1.0, 2.0)
WORKERS = 2
TARGET_MEMORY_GROWTH = 1.3


def sizes(bench: Bench) -> list[int]:
    # 118287 images: 59143, 118287, 236574 (the sizes)
    return [int(bench.base_images * f) for f in FACTORS]


def run(bench: Bench) -> CaseResult:
    result = CaseResult("scaling", f"Scaling (cocolake ingest, {WORKERS} workers)")
    reuse = bench.results.get("ingest")
    stats = {}
    for images in sizes(bench):
        source = bench.input(images)
        name = f"scaling.{images}"
        same = reuse.stats.get("ingest.cocolake.w2") if reuse else None
        if images == bench.base_images and same is not None and same.ok:
            stats[name] = same
            continue
        wh = bench.work / "wh-scaling"
        bench.warm(source)
        cmd = Command(name, f"cocolake ingest, {images} images", bench.ingest_argv(source, wh, WORKERS),
                      before=bench.clear(wh))
        stats.update(bench.measure_all([cmd]))
        bench.clear(wh)()
    result.stats = stats
    rows = ["| images | input | wall | CPU | peak tree memory | memory vs 1× | time vs 1× |",
            "|---|---|---|---|---|---|---|"]
    one = stats.get(f"scaling.{bench.base_images}")
    for images in sizes(bench):
        s = stats[f"scaling.{images}"]
        size = os.path.getsize(bench.input(images)) / MB
        if not s.ok:
            rows.append(f"| {images} | {size:.0f} MB | {s.problem} | | | | |")
            continue
        mem_x = time_x = "—"
        if one is not None and one.ok:
            mem_x = f"{s.median('peak_bytes') / one.median('peak_bytes'):.2f}×"
            time_x = f"{s.median('wall_s') / one.median('wall_s'):.2f}×"
        rows.append(f"| {images} | {size:.0f} MB | {s.median('wall_s'):.2f} s | {s.median('cpu_s'):.1f} s | "
                    f"{s.median('peak_bytes') / GB:.2f} GB | {mem_x} | {time_x} |")
    result.extra += ["", *rows]
    two = stats.get(f"scaling.{2 * bench.base_images}")
    if one is not None and two is not None and one.ok and two.ok:
        growth = two.median("peak_bytes") / one.median("peak_bytes")
        result.extra += ["", f"Target: 2× the input costs ≤ {TARGET_MEMORY_GROWTH}× the peak memory: "
                             f"{growth:.2f}× ({'met' if growth <= TARGET_MEMORY_GROWTH else 'not met'})."]
    return result

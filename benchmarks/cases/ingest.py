"""Ingest, instances: ``cocolake ingest`` with 1 and 2 workers against what users do today.

Baselines: pycocotools (``COCO(path)``, then ``annToRLE`` for every annotation) and plain
``json.load`` (the least any approach that builds Python objects pays). Every cocolake
run writes a fresh warehouse; the last 2-worker warehouse is kept for the queries and
the export.
"""

from __future__ import annotations

import statistics

from . import GB, Bench, CaseResult, Command, Comparison, ratio

TARGET_SPEEDUP = 4.0  # with the default workers (2 on the benchmark machine)
TARGET_PEAK_GB = 1.5
TARGET_SCALING = 1.8  # 2 workers against 1


def commands(bench: Bench, source) -> list[Command]:
    py, src = bench.python, bench.rel(source)
    wh = {w: bench.work / f"wh-ingest-w{w}" for w in (1, 2)}
    return [
        Command("ingest.pycocotools", "pycocotools: COCO() + annToRLE per annotation",
                [py, "benchmarks/baselines/pycoco_ingest.py", src]),
        Command("ingest.cocolake.w1", "cocolake ingest, 1 worker",
                bench.ingest_argv(source, wh[1], 1), before=bench.clear(wh[1])),
        Command("ingest.json_load", "json.load", [py, "benchmarks/baselines/json_load.py", src]),
        Command("ingest.cocolake.w2", "cocolake ingest, 2 workers",
                bench.ingest_argv(source, wh[2], 2), before=bench.clear(wh[2])),
    ]


def run(bench: Bench) -> CaseResult:
    source = bench.input()
    bench.warm(source)
    stats = bench.measure_all(commands(bench, source))
    if stats["ingest.cocolake.w2"].ok:
        bench.adopt_warehouse(bench.work / "wh-ingest-w2")
    result = CaseResult("ingest", "Ingest, instances", stats)
    for w in (1, 2):
        for base, name in (("ingest.pycocotools", "pycocotools"), ("ingest.json_load", "json.load")):
            result.comparisons.append(Comparison(f"ingest, {w} worker{'s' * (w > 1)} vs {name}",
                                                 base, f"ingest.cocolake.w{w}"))
    result.comparisons.append(Comparison("ingest, 2 workers vs 1 worker", "ingest.cocolake.w1", "ingest.cocolake.w2"))
    result.extra += targets(stats, bench)
    return result


def targets(stats, bench: Bench) -> list[str]:
    base = stats["ingest.pycocotools"]
    rows = ["| target | workers | measured | met |", "|---|---|---|---|"]
    for w in (1, 2):
        s = stats[f"ingest.cocolake.w{w}"]
        speed = ratio(base, s, "wall_s")
        if speed is not None and w == 2:
            rows.append(f"| ≥ {TARGET_SPEEDUP:.0f}× faster than pycocotools (default workers) | {w} | "
                        f"{speed:.1f}× | "
                        f"{'yes' if speed >= TARGET_SPEEDUP else 'no'} |")
        if s.ok:
            peak = s.median("peak_bytes") / GB
            rows.append(f"| peak tree memory ≤ {TARGET_PEAK_GB} GB | {w} | {peak:.2f} GB | "
                        f"{'yes' if peak <= TARGET_PEAK_GB else 'no'} |")
    one, two = stats["ingest.cocolake.w1"], stats["ingest.cocolake.w2"]
    if one.ok and two.ok:
        # the commands run in turn (each run of the harness runs every command once): the
        # ratio of each run's pair is the steadier figure on a host whose speed drifts
        pairs = sorted(a.wall_s / b.wall_s for a, b in zip(one.runs, two.runs))
        speed = ratio(one, two, "wall_s")
        rows.append(f"| 2 workers ≥ {TARGET_SCALING}× faster than 1 worker | 2 vs 1 | {speed:.2f}× of the medians; "
                    f"pair by pair {statistics.median(pairs):.2f}× ({pairs[0]:.2f}–{pairs[-1]:.2f}) | "
                    f"{'yes' if speed >= TARGET_SCALING else 'no'} |")
    if len(rows) == 2:
        return []
    note = [] if not bench.quick else [
        "", "(The targets are set for the train2017-scale file; a --quick input only shows the trend.)"]
    return ["", "Targets:", "", *rows, *note]

"""Queries: three analysis questions, as ``cocolake sql`` against pycocotools + a Python loop.

Whole process each: ``cocolake sql --warehouse W --dataset bench "SELECT ..."`` against
``benchmarks/baselines/pycoco_queries.py F QUERY`` (which loads the file for the
question). The target ("under 0.5 s per query") is about the query itself, so the
query is also timed inside one process, interpreter start excluded: connecting (DuckDB
plus the views over the manifest) and running it, then running it again on the same
connection. That part also runs as a module::

    python -m benchmarks.cases.queries --warehouse W --dataset bench --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from . import Bench, CaseResult, Command, Comparison

TARGET_SECONDS = 0.5

CATEGORY_STATS = "SELECT * FROM category_stats"

AREA_BUCKETS = """\
SELECT area_bucket, CAST(COUNT(*) AS BIGINT) AS annotations
FROM annotations_enriched
GROUP BY area_bucket
ORDER BY area_bucket"""

TOP_IMAGES = """\
SELECT image_id, CAST(COUNT(*) AS BIGINT) AS annotations
FROM annotations
GROUP BY image_id
ORDER BY annotations DESC, image_id
LIMIT 10"""


def queries() -> dict[str, str]:
    """name -> SQL, the questions the baseline script answers."""
    return {"category_stats": CATEGORY_STATS, "area_buckets": AREA_BUCKETS, "top_images": TOP_IMAGES}


def one_line(sql: str) -> str:
    return " ".join(sql.split())


def run(bench: Bench) -> CaseResult:
    source = bench.input()
    result = CaseResult("queries", "Queries")
    sql_problem = bench.subcommand_problem("sql")
    try:
        wh = bench.warehouse()
    except RuntimeError as err:
        result.extra += ["", f"Not measured: {err}"]
        return result
    bench.warm(source)
    commands = []
    for name, sql in queries().items():
        commands.append(Command(f"queries.pycocotools.{name}", f"pycocotools + loop: {name}",
                                [bench.python, "benchmarks/baselines/pycoco_queries.py", bench.rel(source), name]))
        commands.append(Command(f"queries.cocolake.{name}", f"cocolake sql: {name}",
                                [bench.cocolake, "sql", "--warehouse", bench.rel(wh), "--dataset", "bench",
                                 one_line(sql)], unavailable=sql_problem))
        result.comparisons.append(Comparison(f"query {name}", f"queries.pycocotools.{name}",
                                             f"queries.cocolake.{name}"))
    result.stats = bench.measure_all(commands)
    result.extra += in_process(bench, wh)
    return result


def in_process(bench: Bench, wh) -> list[str]:
    argv = [bench.python, "-m", "benchmarks.cases.queries", "--warehouse", bench.rel(wh),
            "--dataset", "bench", "--repeat", str(max(3, bench.runs))]
    try:
        timings = bench.python_json(argv, "queries.in-process.log")
    except RuntimeError as err:
        return ["", f"In-process query times not measured: {err}"]
    rows = [
        "",
        "Each query alone, inside one process (interpreter start and imports excluded): "
        "connect = DuckDB connection with the views over the manifest; first = the query's "
        "first run on that connection; again = median of the repeats on the same connection. "
        f"Command: `{bench.shown(argv)}`.",
        "",
        "| query | connect | first | connect + first | again | < 0.5 s |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in timings["queries"].items():
        total = t["connect_s"] + t["first_s"]
        rows.append(f"| {name} | {t['connect_s']:.3f} s | {t['first_s']:.3f} s | {total:.3f} s | "
                    f"{t['again_s']:.3f} s | {'yes' if total < TARGET_SECONDS else 'no'} |")
    rows += ["", "SQL:", ""]
    for name, sql in queries().items():
        rows += [f"- {name}: `{one_line(sql)}`"]
    return rows


# ---------------------------------------------------------------------------- in-process timing


def time_queries(warehouse: str, dataset: str, repeat: int) -> dict:
    t0 = time.perf_counter()
    from pipeline.query import views

    imported = time.perf_counter() - t0
    out = {}
    for name, sql in queries().items():
        t0 = time.perf_counter()
        con = views.connect(warehouse, dataset)
        t1 = time.perf_counter()
        rows = con.execute(sql).fetchall()
        t2 = time.perf_counter()
        again = []
        for _ in range(repeat):
            t = time.perf_counter()
            con.execute(sql).fetchall()
            again.append(time.perf_counter() - t)
        con.close()
        out[name] = {"connect_s": t1 - t0, "first_s": t2 - t1, "again_s": statistics.median(again),
                     "rows": len(rows)}
    return {"import_s": imported, "queries": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cases.queries",
                                description="Time each benchmark query inside one process; print JSON.")
    p.add_argument("--warehouse", required=True)
    p.add_argument("--dataset", default="bench")
    p.add_argument("--repeat", type=int, default=3, help="runs of each query after the first")
    args = p.parse_args(argv)
    print(json.dumps(time_queries(args.warehouse, args.dataset, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""parallel_ceiling: how much faster this machine runs two ingests at once than one after the other.

    python -m benchmarks.parallel_ceiling SOURCE [--runs 3]

Runs ``cocolake ingest --workers 1`` of SOURCE alone, then two of them at the same time
(each into its own scratch warehouse), ``--runs`` times in turn, and prints the median
wall times and the ceiling they give: 2 x (one alone) / (two at once). Two independent
processes share nothing but the machine (cores, caches, memory bandwidth, the page cache),
so no scheduling of one ingest over 2 workers can beat that ceiling; a ceiling under 2 is
what the hardware takes from any 2-process run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _ingest(source: str, warehouse: str) -> subprocess.Popen:
    shutil.rmtree(warehouse, ignore_errors=True)
    cocolake = os.path.join(os.path.dirname(sys.executable), "cocolake")
    return subprocess.Popen([cocolake, "ingest", "--source", source, "--warehouse", warehouse,
                             "--dataset", "ceiling", "--workers", "1", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"cocolake ingest failed ({p.returncode}): {err.decode(errors='replace').strip()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parallel_ceiling", description=__doc__.splitlines()[0])
    p.add_argument("source", help="a COCO instances JSON file")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    alone, together = [], []
    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
        a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        _wait([_ingest(args.source, a)])  # warm-up: page cache, compiled bytecode
        for _ in range(args.runs):
            t0 = time.perf_counter()
            _wait([_ingest(args.source, a)])
            alone.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _wait([_ingest(args.source, a), _ingest(args.source, b)])
            together.append(time.perf_counter() - t0)
    one, two = statistics.median(alone), statistics.median(together)
    print(f"one ingest alone: {one:.2f} s (runs {', '.join(f'{t:.2f}' for t in alone)})")
    print(f"two at once:      {two:.2f} s (runs {', '.join(f'{t:.2f}' for t in together)})")
    print(f"ceiling for 2 processes: 2 x {one:.2f} / {two:.2f} = {2 * one / two:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""timeline: when each part of one ingest runs, per process: where 2 workers lose to 1.

    python -m benchmarks.timeline --workers 2 SOURCE [--warehouse DIR]

Runs ``run_ingest`` once in this process and prints, in seconds from the start: when the
local cluster is up, when each phase (``scan``, ``ingest``) is submitted and done, and per
worker its first task's start, its last task's end, its busy seconds and the idle time
before its first task and after its last one (the tail: the whole run waits for the worker
that ends last). Task times come from Dask's task stream (``get_task_stream``), or with
``--workers 1`` (no cluster) from callbacks of the synchronous scheduler. ``--tasks`` lists every task.
Wall times move with the machine's load; the order of events and the idle gaps hardly do.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time

T0 = time.time()
events: list[tuple[float, str]] = []
streams: list[tuple[str, list[dict]]] = []
worker_cpu: dict[str, tuple[float, float]] = {}  # worker address -> (user, system) CPU-s of its process, at the end


def _process_cpu() -> tuple[float, float]:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user, t.system


def _machine_busy() -> float:
    """CPU seconds every process of the machine has used since boot (/proc/stat, all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def mark(what: str) -> None:
    events.append((time.time() - T0, what))


def _hook() -> None:
    """Wrap the runner's compute and the cluster's start to record their times."""
    from pipeline.ingest import run

    compute = run.compute

    def timed(tasks, client, progress, phase):
        mark(f"{phase}: submitted ({len(tasks)} tasks)")
        if client is None:
            from dask.callbacks import Callback

            starts: dict = {}
            data: list[dict] = []

            def pre(key, dsk, state):
                starts[key] = time.time()

            def post(key, result, dsk, state, worker_id):
                data.append({"worker": "synchronous", "key": str(key),
                             "startstops": [{"action": "compute", "start": starts[key], "stop": time.time()}]})

            with Callback(pretask=pre, posttask=post):
                out = compute(tasks, client, progress, phase)
            streams.append((phase, data))
        else:
            from distributed import get_task_stream

            with get_task_stream(client) as ts:
                out = compute(tasks, client, progress, phase)
            streams.append((phase, ts.data))
            worker_cpu.update(client.run(_process_cpu))
        mark(f"{phase}: done")
        return out

    run.compute = timed
    from pipeline import warehouse
    from pipeline.query import views

    commit = warehouse.Transaction.commit

    def timed_commit(self, *args, **kwargs):
        mark("commit: starting")
        out = commit(self, *args, **kwargs)
        mark("commit: done")
        return out

    warehouse.Transaction.commit = timed_commit
    split_counts = views.split_counts

    def timed_counts(*args, **kwargs):
        out = split_counts(*args, **kwargs)
        mark("counts: done")
        return out

    views.split_counts = timed_counts
    try:
        import distributed
    except ImportError:
        return
    cluster_cls = distributed.LocalCluster

    class Timed(cluster_cls):
        def __init__(self, *args, **kwargs):
            mark("cluster: starting")
            super().__init__(*args, **kwargs)
            mark("cluster: up")

        def close(self, *args, **kwargs):
            mark("cluster: closing")
            out = super().close(*args, **kwargs)
            mark("cluster: closed")
            return out

    distributed.LocalCluster = Timed


def report(show_tasks: bool) -> list[str]:
    lines = [f"{t:7.2f}  {what}" for t, what in events]
    per_worker: dict[str, list[tuple[float, float, str, str]]] = {}
    for phase, data in streams:
        for rec in data:
            for ss in rec.get("startstops", ()):
                if ss["action"] == "compute":
                    per_worker.setdefault(rec["worker"], []).append(
                        (ss["start"] - T0, ss["stop"] - T0, phase, rec["key"]))
    if not per_worker:
        return lines
    end = max(b for tasks in per_worker.values() for _, b, _, _ in tasks)
    lines += ["", "worker                      tasks  first start  last end   busy   user    sys  idle before  tail idle"]
    for w, tasks in sorted(per_worker.items()):
        tasks.sort()
        busy = sum(b - a for a, b, _, _ in tasks)
        first, last = tasks[0][0], max(b for _, b, _, _ in tasks)
        cpu = "{:5.2f}  {:5.2f}".format(*worker_cpu[w]) if w in worker_cpu else "    -      -"
        lines.append(f"{w:<27} {len(tasks):5d}  {first:11.2f}  {last:8.2f}  {busy:5.2f}  {cpu}  {first:11.2f}  "
                     f"{end - last:9.2f}")
        if show_tasks:
            lines += [f"    {a:7.2f} {b:7.2f} {b - a:6.2f}  {phase}  {key}" for a, b, phase, key in tasks]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warehouse", help="default: a temporary directory, removed afterwards")
    p.add_argument("--tasks", action="store_true", help="list every task per worker")
    args = p.parse_args(argv)
    _hook()
    from pipeline.ingest.run import run_ingest

    with contextlib.ExitStack() as stack:
        wh = args.warehouse
        if wh is None:
            wh = tempfile.mkdtemp(prefix="timeline-")
            stack.callback(shutil.rmtree, wh, True)
        mark("run_ingest: called")
        busy0, wall0 = _machine_busy(), time.time()
        run_ingest([args.source], warehouse=wh, dataset="bench", workers=args.workers)
        busy, wall = _machine_busy() - busy0, time.time() - wall0
        mark("run_ingest: returned")
    print("\n".join(report(args.tasks)))
    own = sum(resource.getrusage(who)[0] + resource.getrusage(who)[1]
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(f"\nrun_ingest: {wall:.2f} s wall; this process tree: {own:.2f} CPU-s (from its start); the machine: "
          f"{busy:.2f} CPU-s busy of {wall * os.cpu_count():.2f} ({os.cpu_count()} cores) during run_ingest")
    return 0


if __name__ == "__main__":
    sys.exit(main())

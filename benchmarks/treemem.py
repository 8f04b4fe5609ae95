"""treemem: run one command and measure it as a whole process tree.

Input: an argument list (and optionally where its output goes).
Output: a ``Measurement``: wall time, user + system CPU of the whole process tree, and the
peak memory of the whole tree.

CPU counts every descendant, also those the command does not wait for: a command that
ends with ``os._exit`` leaves a fork server and Dask workers to finish on their own, and
their CPU never reaches the command's rusage. On Linux this process becomes a child
subreaper (``PR_SET_CHILD_SUBREAPER``), so such orphans are re-parented to it; after the
command exits it waits for them (up to ``ORPHAN_SECONDS``) and adds their rusage. The wall
time stays the command's own: it ends when the command exits.

Peak tree memory is the largest sum of the resident set sizes (RSS) of the process and
all its descendants (Dask nannies and workers included), sampled every ~20 ms with psutil
(new descendants are found every ~200 ms). A spike shorter than the sampling interval
can be missed, so the result is never less than the largest single-process peak the
kernel reports on exit (``ru_maxrss``). Pages shared between processes (the same
libraries mapped by every worker) count once per process, as ``top`` and ``ps`` count
them, so the sum errs on the high side.

Also a command line tool, for measuring anything by hand::

    python -m benchmarks.treemem -- cocolake ingest --source F --warehouse W --dataset bench
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import psutil

SAMPLE_SECONDS = 0.02
ORPHAN_SECONDS = 30.0  # how long to wait for descendants that outlive the command
_PR_SET_CHILD_SUBREAPER = 36


@dataclasses.dataclass
class Measurement:
    wall_s: float
    cpu_s: float  # user + system of the whole tree (orphans included where subreaping works)
    peak_tree_bytes: int  # the largest sampled sum of RSS over the tree
    peak_process_bytes: int  # ru_maxrss: the largest single process of the tree
    max_processes: int  # the most processes seen alive at once
    returncode: int
    timed_out: bool = False
    orphans: int = 0  # descendants that outlived the command and were waited for here
    orphans_cpu_s: float = 0.0  # their part of cpu_s

    @property
    def peak_bytes(self) -> int:
        return max(self.peak_tree_bytes, self.peak_process_bytes)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["peak_bytes"] = self.peak_bytes
        return d


class _Sampler(threading.Thread):
    """Samples the RSS of a process tree until stopped; keeps the peak of the sum.

    Reading a process's RSS is cheap (one small /proc file); listing the descendants
    scans every process on the machine, so it runs every ``DISCOVER_EVERY`` samples only,
    to keep the sampler's own CPU use small next to what it measures.
    """

    DISCOVER_EVERY = 10

    def __init__(self, pid: int, interval: float = SAMPLE_SECONDS):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.max_processes = 0
        self.samples = 0
        self._stop_event = threading.Event()
        self._procs: dict[int, psutil.Process] = {pid: self.root}

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def discover(self) -> None:
        try:
            children = self.root.children(recursive=True)
        except psutil.Error:  # the root has exited
            return
        for p in children:
            # keep the first Process object per pid: psutil then notices a reused pid
            self._procs.setdefault(p.pid, p)

    def sample(self) -> None:
        if self.samples % self.DISCOVER_EVERY == 0:
            self.discover()
        total = 0
        alive = 0
        for pid, p in list(self._procs.items()):
            try:
                total += p.memory_info().rss
                alive += 1
            except psutil.Error:  # exited (or a zombie): it holds no memory any more
                del self._procs[pid]
        self.samples += 1
        self.peak = max(self.peak, total)
        self.max_processes = max(self.max_processes, alive)

    def stop(self) -> None:
        self._stop_event.set()


def _kill_tree(pid: int) -> None:
    """Kill the process we started and its descendants (by pid, children first)."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


_subreaper: bool | None = None


def _become_subreaper() -> bool:
    """Make this process the reaper of orphaned descendants (Linux); False where that fails."""
    global _subreaper
    if _subreaper is None:
        _subreaper = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            except OSError:
                pass
    return _subreaper


def _reap_orphans(before: set[int], timeout: float) -> tuple[int, float]:
    """Wait for the children this process gained as a subreaper; their count and CPU.

    A child not in ``before`` (this process's children before the command started) is a
    descendant of the command re-parented here when its parent exited. Waiting for it
    returns its rusage and that of the descendants it waited for; an orphan's own children
    become orphans in turn, so the loop runs until none is left or the time is up.
    """
    me = psutil.Process()
    deadline = time.perf_counter() + timeout
    count, cpu = 0, 0.0
    while time.perf_counter() < deadline:
        try:
            orphans = [c.pid for c in me.children() if c.pid not in before]
        except psutil.Error:
            break
        if not orphans:
            break
        for pid in orphans:
            while time.perf_counter() < deadline:
                try:
                    got, _, rusage = os.wait4(pid, os.WNOHANG)
                except ChildProcessError:  # not ours after all (reaped elsewhere)
                    break
                if got == pid:
                    count += 1
                    cpu += rusage.ru_utime + rusage.ru_stime
                    break
                time.sleep(0.005)
    return count, cpu


def measure(
    argv: list[str],
    *,
    cwd: str | None = None,
    env: dict | None = None,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    timeout: float | None = None,
    interval: float = SAMPLE_SECONDS,
) -> Measurement:
    """Run ``argv`` to completion and measure it (see the module docstring)."""
    subreaper = _become_subreaper()
    before = {c.pid for c in psutil.Process().children()}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    sampler = _Sampler(proc.pid, interval)
    sampler.sample()
    sampler.start()
    timed_out = False
    deadline = None if timeout is None else t0 + timeout
    status = None
    rusage = None
    while status is None:
        # wait4 returns the rusage of the child and of the descendants it waited for
        pid, status_raw, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            status = status_raw
            break
        if deadline is not None and time.perf_counter() > deadline and not timed_out:
            timed_out = True
            _kill_tree(proc.pid)
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    sampler.stop()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    orphans, orphans_cpu = _reap_orphans(before, ORPHAN_SECONDS) if subreaper else (0, 0.0)
    return Measurement(
        wall_s=wall,
        cpu_s=rusage.ru_utime + rusage.ru_stime + orphans_cpu,
        orphans=orphans,
        orphans_cpu_s=orphans_cpu,
        peak_tree_bytes=sampler.peak,
        peak_process_bytes=rusage.ru_maxrss * 1024,  # Linux reports kilobytes
        max_processes=sampler.max_processes,
        returncode=proc.returncode,
        timed_out=timed_out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.treemem",
        description="Run a command; print its wall time, CPU time and peak process-tree memory as JSON.",
    )
    parser.add_argument("--interval", type=float, default=SAMPLE_SECONDS, help="seconds between samples")
    parser.add_argument("--timeout", type=float, help="kill the tree after this many seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    m = measure(command, stdout=None, stderr=None, timeout=args.timeout, interval=args.interval)
    print(json.dumps(m.to_json(), indent=1), file=sys.stderr)
    return m.returncode


if __name__ == "__main__":
    sys.exit(main())

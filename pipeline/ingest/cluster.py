"""cluster: where an ingest's graphs run, as a client: none, a shared cluster, or our own.

``dask_client`` gives ``None`` (Dask's synchronous scheduler, ``workers=1``), a client of an
existing cluster (``scheduler=``), or one of a local cluster of single-threaded worker
processes that it starts, keeps quiet and closes; ``starting_client`` does the same but
starts a local cluster in a thread, so that the caller's own work overlaps the start.
Imports the core only (and ``ingest.warm`` by name, in the workers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker

import dask

from ..defaults import IN_PROCESS_BYTES
from ..errors import ConfigError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None):
    """None for the synchronous scheduler, else a ``distributed.Client``.

    A local cluster is ours: it is closed (its worker processes joined) before this exits,
    also on an error or Ctrl-C, so that no task of it runs afterwards. Unless the log level
    is DEBUG (``cocolake -v``), it says nothing: its workers and scheduler log nothing, its
    workers never see the terminal's Ctrl-C (the command stops them), and its HTTP server
    takes a free port on 127.0.0.1 instead of warning that 8787 is in use.
    """
    with starting_client(workers, scheduler) as started:
        yield started()


@contextlib.contextmanager
def starting_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Callable]:
    """As ``dask_client``, but yields at once a function that returns the client.

    A local cluster starts in a thread meanwhile (its worker processes take about a second
    to import Python, Dask and cocolake, mostly waiting), so that what the caller does before
    its first task (an ingest scans its documents) runs at the same time; the function waits
    for the start and raises what made it fail. On leaving, the start is waited for and the
    cluster closed whatever happened, as ``dask_client`` does.
    """
    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="20s", set_as_default=False)
        except OSError as err:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
        try:
            yield lambda: client
        finally:
            client.close()
        return
    n = worker_count(workers)
    if n <= 1:
        with dask.config.set(scheduler="synchronous"):
            yield lambda: None
        return
    import distributed  # noqa: F401 - here: its import configures the loggers that quiet_cluster_logs then silences

    verbose = log.getEffectiveLevel() <= logging.DEBUG
    with contextlib.ExitStack() as quiet:
        if not verbose:
            quiet.enter_context(quiet_cluster_logs())
        quiet.enter_context(dask.config.set({
            "distributed.worker.daemon": False, **_WORKER_MALLOC, **_NO_DASHBOARD,
            "distributed.worker.preload": [*dask.config.get("distributed.worker.preload", []), _WARM],
        }))
        # multiprocessing starts its resource tracker on first use, from the thread that
        # needs it, and then unblocks SIGINT in that thread (resource_tracker.py): started
        # here, before the mask, so that the cluster's threads keep SIGINT blocked
        resource_tracker.ensure_running()
        forkserver = start_fork_server(n)  # unless the command started it already
        if forkserver:
            quiet.enter_context(dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}))
            _keep_our_preload()
        start = _LocalStart(n, verbose, env=dict(os.environ) if forkserver else None)
        try:
            with sigint_held():  # the thread, and the threads and processes it starts, inherit SIGINT blocked
                start.thread.start()
            yield start.result
        finally:
            with sigint_held():  # a Ctrl-C now would leave the workers running; it is raised after
                start.close()


class _LocalStart:
    """A local cluster and its client, started in a thread of their own."""

    def __init__(self, n: int, verbose: bool, env: dict | None = None):
        self.n, self.verbose, self.env = n, verbose, env
        self.cluster = self.client = self.error = None
        self.thread = threading.Thread(target=self._start, name="cocolake-cluster-start", daemon=True)

    def _start(self) -> None:
        from distributed import Client, LocalCluster

        try:
            self.cluster = LocalCluster(
                n_workers=self.n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # no dashboard, but the scheduler's HTTP server (health, metrics) still
                # binds, by default at 8787, with a warning when that is taken
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=False if self.verbose else _SILENT,
                **({"env": self.env} if self.env is not None else {}),
            )
            self.client = Client(self.cluster, set_as_default=False)
        except BaseException as err:  # noqa: BLE001 - raised in the caller's thread, by result()
            self.error = err

    def result(self):
        """The client, once the cluster is up (Ctrl-C interrupts the wait)."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.client

    def close(self) -> None:
        self.thread.join()
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


_SILENT = logging.CRITICAL + 1  # a level no record has


@contextlib.contextmanager
def quiet_cluster_logs():
    """Drop the records of distributed (and of the asyncio/tornado loops it runs) in this process.

    The CLI sends them to the root handler, so only logger levels stop them; every logger
    under ``distributed`` that already has a level is set too (children keep their own).
    """
    names = ("distributed", "asyncio", "tornado")
    loggers = [logging.getLogger(n) for n in names] + [
        logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
        if n.startswith(tuple(f"{p}." for p in names)) and logging.getLogger(n).level
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(_SILENT)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def sigint_held():
    """Hold Ctrl-C back for the duration; raise ``KeyboardInterrupt`` at the end if it came.

    SIGINT is blocked in this thread, so the threads and processes started meanwhile (the
    cluster's event loop, its worker processes) inherit the mask and never receive it: a
    terminal's Ctrl-C goes to the whole process group, and a worker it interrupts prints
    its own tracebacks and may die after the run removed its parts. A SIGINT delivered to
    another thread of this process meanwhile is recorded by a handler instead of raised.
    Outside the main thread (where signals cannot be handled) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending one is handled here
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught and callable(previous):
        previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
    elif caught and previous != signal.SIG_IGN:
        raise KeyboardInterrupt


# Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers (to hand freed memory back to the
# system), and setting any malloc threshold turns off glibc's adaptive mmap threshold. Then
# every buffer above 128 kB is a fresh mmap: pycocotools' rleMerge allocates 4 bytes per
# image pixel (1.2 MB for 640x480) for each multi-part polygon, and the page faults cost
# ~10 s of CPU (mostly system time) per train2017. 32 MB is where the adaptive threshold would settle
# (what a single process gets); measured: -15% CPU, +0.15 GB peak on train2017 scale.
# Dask's trim threshold (64 kB) also gives back every free stretch at the top of the heap
# at once, to be faulted in again by the next chunk's buffers: 64 MB (twice the mmap
# threshold, as glibc's adaptive rule would set it) cut the workers' system time by about
# a third (3.2 -> 2.2 CPU-s on train2017 scale) for +0.05 GB of peak tree memory.
# https://distributed.dask.org/en/stable/worker-memory.html#automatically-trim-memory
_WORKER_MALLOC = {"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 << 20,
                  "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 64 << 20}


# What only a dashboard shows, off in a local cluster that has none: every worker's
# statistical profiler samples its threads' stacks every 10 ms (3% of a core per idle
# worker, more while a task runs), and the scheduler and nannies sample the system and
# their event loop's latency several times a second.
_NO_DASHBOARD = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "1s",
}


_WARM = "pipeline.ingest.warm"  # imported by each worker as it starts (see there)


def _keep_our_preload() -> None:
    """Stop distributed from importing, in this process, what its own fork server would preload.

    At the first worker's start, ``distributed.utils.get_mp_context`` imports Dask's required
    and optional packages here (pandas among them, when it is installed: 0.5 s of CPU beside
    the scan) only to name them as the fork server's preload; the fork server this process
    started runs already, with the workers' modules imported, and no preload applies to it.
    """
    from distributed import utils

    if hasattr(utils, "_forkserver_preload_set"):
        utils._forkserver_preload_set = True


def local_workers(workers: int | None, scheduler: str | None, sizes: list[int | None] | None) -> int | None:
    """The worker count for ``starting_client``: 1 (this process) when none was given, no
    scheduler either, and the documents are known to total at most ``IN_PROCESS_BYTES``.

    ``sizes`` are the bytes of each document, None where not known (a stream, a set of
    per-image files: ``sizes`` None). A local cluster takes 0.5-1.5 s to start and close
    on a 2-core machine, more than a second worker saves on an input of up to about three
    chunks; an explicit ``workers`` is always kept.
    """
    if workers is not None or scheduler or sizes is None or not sizes or None in sizes:
        return workers
    return 1 if sum(sizes) <= IN_PROCESS_BYTES else None


def worker_count(workers: int | None) -> int:
    """The local worker processes ``workers`` means: as given, else one per core; 1 is this process."""
    return workers or os.cpu_count() or 1


def local_json_sizes(urls: list[str], most_files: int = 1000) -> list[int] | None:
    """The sizes of the documents of ``urls`` when each is a plain local ``.json`` file or a
    local directory of such files (a command's first look, before the sources are resolved);
    None when any is not (a URL, a pattern, an archive or compressed file, a directory of
    more than ``most_files`` entries or with sub-directories deeper than one level)."""
    sizes: list[int] = []
    for url in urls:
        path = url[len("file://"):] if url.startswith("file://") else url
        if "://" in path or any(c in path for c in "*?["):
            return None
        if os.path.isfile(path):
            if not path.endswith(".json"):
                return None
            sizes.append(os.path.getsize(path))
        elif not os.path.isdir(path) or (found := _folder_json_sizes(path, most_files)) is None:
            return None
        else:
            sizes += found
    return sizes


def _folder_json_sizes(folder: str, most_files: int) -> list[int] | None:
    """The ``.json`` files of ``folder`` and of its sub-directories, as the sources read one."""
    sizes, seen = [], 0
    for top in os.scandir(folder):
        for entry in (os.scandir(top.path) if top.is_dir() else (top,)):
            seen += 1
            if seen > most_files or entry.is_dir() or entry.name.endswith((".gz", ".zip")):
                return None
            if entry.name.endswith(".json"):
                sizes.append(entry.stat().st_size)
    return sizes


def start_fork_server(workers: int | None = None, scheduler: str | None = None) -> bool:
    """Start multiprocessing's fork server with the workers' modules imported, if a local
    cluster of ``workers`` will need it (``starting_client``'s rule); False where there is none.

    A command calls it as early as it can (before its own imports), so that the server's
    imports overlap them; ``starting_client`` calls it again, which is then a no-op.

    Spawned workers each start a Python and import Dask, pyarrow, pandas and the task
    modules (about 0.6 CPU-s each) on the cores the scan needs. The fork server does that
    once, in a process of its own started now, while this one scans; each worker is then a
    fork of it, with everything imported. Forking this process instead would copy a process
    with threads (the cluster's event loop), which is not safe. The server starts with the
    workers' malloc settings in its environment (glibc reads them once, at start, and the
    forks inherit them), and lives as long as this process, serving later local clusters.
    A fork server already running (started by other code of this process) is used as it is.
    Its environment is the one it started with: each worker is given this process's
    environment as it is now (``env``), as a spawned worker would have it.
    """
    import multiprocessing
    from multiprocessing import forkserver

    if scheduler or worker_count(workers) <= 1:
        return False
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    # what the nanny puts in this process's environment before it starts each worker
    # (malloc thresholds, one BLAS/OpenMP thread: read once, as the server starts and imports NumPy)
    env = dask.config.get("distributed.nanny.pre-spawn-environ", {}) | {
        k.rsplit(".", 1)[1]: v for k, v in _WORKER_MALLOC.items()}
    os.environ.update({k: str(v) for k, v in env.items()})
    multiprocessing.get_context("forkserver").set_forkserver_preload([_WARM, "distributed"])  # warm first: pandas stays out
    # the resource tracker unblocks SIGINT in the thread that starts it (see starting_client):
    # started first, the server is spawned with SIGINT blocked, which it keeps while it
    # imports; its main then ignores it, and so does every worker forked from it
    resource_tracker.ensure_running()
    with sigint_held():
        forkserver.ensure_running()
    return True

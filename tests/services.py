"""Real services on 127.0.0.1 for tests: a Dask cluster of worker processes, an S3 server.

- ``dask_cluster`` (session): a ``dask scheduler`` and two ``dask worker`` processes
  (one single-threaded worker each), started from this virtualenv; yields the scheduler
  address once both workers are connected. ``DaskCluster`` is the same as a context
  manager, for a test that needs a cluster of its own (one it may damage).
- ``s3_storage`` (session): ``moto_server`` (an S3-compatible server) with the bucket
  ``BUCKET``; yields the s3fs storage options. Worker processes reach it over HTTP like
  any client.

Every process is started in its own session and its whole process group is terminated
afterwards (SIGTERM, then SIGKILL), whatever happened; the logs go to files that a
failure to start quotes.

Registered for the whole test suite by ``pytest_plugins`` in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "cocolake"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DaskCluster:
    """``dask scheduler`` + ``workers`` × ``dask worker --nworkers 1 --nthreads 1`` on 127.0.0.1."""

    def __init__(self, workdir: Path, workers: int = 2, memory_limit: str = "2GiB", timeout: float = 60,
                 config: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.config = dict(config or {})  # Dask settings as environment variables, DASK_...
        self.workers = workers
        self.memory_limit = memory_limit
        self.timeout = timeout
        self.address: str | None = None
        self.procs: list[subprocess.Popen] = []
        self._logs: list[Path] = []

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.workdir / f"{name}.log"
        self._logs.append(log)
        with open(log, "wb") as out:
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # its own process group
                env={**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False", **self.config},
            ))

    def start(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        scheduler_file = self.workdir / "scheduler.json"
        self._spawn("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard", "--scheduler-file", str(scheduler_file)])
        self.address = f"tcp://127.0.0.1:{port}"
        deadline = time.monotonic() + self.timeout
        while not scheduler_file.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Dask scheduler did not start in {self.timeout:.0f} s\n{self.logs()}")
            time.sleep(0.1)
        self.address = json.loads(scheduler_file.read_text())["address"]
        for i in range(self.workers):
            self._spawn(f"worker-{i}", ["distributed.cli.dask_worker", self.address, "--host", "127.0.0.1",
                                        "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                        "--memory-limit", self.memory_limit,
                                        "--local-directory", str(self.workdir / f"worker-{i}")])
        self.wait_for_workers(self.workers, deadline - time.monotonic())
        return self.address

    def wait_for_workers(self, n: int, timeout: float | None = None) -> None:
        from distributed import Client

        with Client(self.address, timeout="20s", set_as_default=False) as client:
            try:
                client.wait_for_workers(n, timeout=timeout or self.timeout)
            except TimeoutError:
                raise RuntimeError(f"{n} Dask workers did not connect\n{self.logs()}") from None

    def worker_pids(self) -> dict[str, int]:
        """The worker processes (children of the ``dask worker`` nannies), by worker address."""
        from distributed import Client

        with Client(self.address, timeout="20s", set_as_default=False) as client:
            return client.run(os.getpid)

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[2]} exited with status {p.returncode}\n{self.logs()}")

    def worker_log_marks(self) -> list[int]:
        """Where each worker's log ends now: ``worker_output_since`` reads what comes after."""
        return [log.stat().st_size if log.exists() else 0 for log in self._worker_logs()]

    def worker_output_since(self, marks: list[int]) -> str:
        """What the worker processes wrote (Dask's records, and anything else on their
        stdout and stderr) since ``worker_log_marks``."""
        out = []
        for log, mark in zip(self._worker_logs(), marks):
            with open(log, "rb") as f:
                f.seek(mark)
                out.append(f.read().decode(errors="replace"))
        return "\n".join(out)  # a log cut mid-line does not run into the next one

    def _worker_logs(self) -> list[Path]:
        return [log for log in self._logs if log.name.startswith("worker-")]

    def logs(self, tail: int = 3000) -> str:
        out = []
        for log in self._logs:
            text = log.read_text(errors="replace") if log.exists() else ""
            out.append(f"--- {log.name}\n{text[-tail:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL what is still there."""
        _stop_groups(self.procs)
        self.procs.clear()

    def __enter__(self) -> DaskCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_groups(procs: list[subprocess.Popen]) -> None:
    """SIGTERM the process group of each process (each leads its own), then SIGKILL the rest."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for p in procs:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if all(p.poll() is not None and not _group_alive(p.pid) for p in procs):
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def dask_cluster_service(tmp_path_factory):
    """A running ``DaskCluster``: a scheduler with two single-threaded worker processes."""
    with DaskCluster(tmp_path_factory.mktemp("dask")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def dask_cluster(dask_cluster_service):
    """Address of the scheduler of ``dask_cluster_service``."""
    return dask_cluster_service.address


class MotoServer:
    """``moto_server`` (an S3-compatible server) on 127.0.0.1, in a process of its own."""

    def __init__(self, workdir: Path, timeout: float = 30):
        self.workdir = Path(workdir)
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.endpoint: str | None = None

    def start(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = self.workdir / "moto.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], cwd=self.workdir,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self.endpoint
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_groups([self.proc])
            self.proc = None

    def __enter__(self) -> MotoServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def s3_storage(tmp_path_factory):
    """s3fs storage options for a moto S3 server on 127.0.0.1 that has the bucket ``BUCKET``."""
    import boto3

    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield {"key": "x", "secret": "x",
               "client_kwargs": {"endpoint_url": server.endpoint, "region_name": "us-east-1"}}

"""The unchanged ingest graph on a real Dask cluster: a scheduler and worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from distributed import Client

from pipeline import synth
from pipeline.errors import CocolakeError
from pipeline.ingest.run import run_ingest
from pipeline.warehouse import MANIFEST, Warehouse
from tests.services import DaskCluster
from tests.ingest.test_filesets import _sa1b_doc

pytestmark = pytest.mark.slow

TABLES = ("images", "annotations", "keypoints", "captions", "categories", "licenses", "info", "rejects")


def _tables(wh: Warehouse) -> dict[str, pa.Table]:
    m = wh.require_manifest()
    return {t: wh.read_table(t, manifest=m) for t in TABLES}


def _parts(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def test_coco_mini_through_the_cluster_equals_a_local_run(dask_cluster, coco_mini, tmp_path):
    src = str(coco_mini / "annotations")
    run_ingest([src], warehouse=str(tmp_path / "local"), dataset="d", workers=1, chunk_bytes=50_000)
    report = run_ingest([src], warehouse=str(tmp_path / "cluster"), dataset="d", scheduler=dask_cluster,
                        chunk_bytes=50_000)
    assert report.rows[("annotations", "val2017")] > 0
    local, cluster = _tables(Warehouse(str(tmp_path / "local"), "d")), _tables(Warehouse(str(tmp_path / "cluster"), "d"))
    for table in TABLES:
        assert cluster[table].equals(local[table]), table
    assert _parts(tmp_path / "cluster") == _parts(tmp_path / "local")


def test_a_per_image_set_through_the_cluster(dask_cluster, tmp_path):
    """Batches of small files are tasks like any other: same parts as a local run."""
    rng = np.random.default_rng(5)
    src = tmp_path / "sa1b"
    src.mkdir()
    for i in range(120):
        (src / f"sa_{i}.json").write_text(json.dumps(_sa1b_doc(rng, i)))
    run_ingest([str(src)], warehouse=str(tmp_path / "local"), dataset="d", workers=1, batch_files=16)
    run_ingest([str(src)], warehouse=str(tmp_path / "cluster"), dataset="d", scheduler=dask_cluster, batch_files=16)
    local, cluster = _tables(Warehouse(str(tmp_path / "local"), "d")), _tables(Warehouse(str(tmp_path / "cluster"), "d"))
    for table in TABLES:
        assert cluster[table].equals(local[table]), table
    assert len(Warehouse(str(tmp_path / "cluster"), "d").require_manifest().files("images")) == 120 // 16 + 1


def test_two_ingests_at_once_on_one_cluster_keep_apart(dask_cluster, coco_mini, tmp_path):
    """Two runs, same file name, other content, other warehouses, on one scheduler at once.

    Each run waits at the end of each phase, still holding its tasks, until the other has
    submitted and finished the same phase: a task key the two runs shared would hand one
    run the other's plans and parts.
    """
    src = coco_mini / "annotations" / "instances_val2017.json"
    doc = json.loads(src.read_text())
    doc["images"] = doc["images"][:40]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in {i["id"] for i in doc["images"]}]
    other = tmp_path / "other" / src.name
    other.parent.mkdir()
    other.write_text(json.dumps(doc))
    barrier = threading.Barrier(2, timeout=120)
    errors = []

    def progress(phase, done, total):
        if total and done == total:
            barrier.wait()

    def ingest(source, name):
        try:
            run_ingest([str(source)], warehouse=str(tmp_path / name), dataset="d", scheduler=dask_cluster,
                       chunk_bytes=50_000, progress=progress)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=ingest, args=(s, n)) for s, n in ((src, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for source, name in ((src, "a"), (other, "b")):
        run_ingest([str(source)], warehouse=str(tmp_path / f"{name}-local"), dataset="d", workers=1,
                   chunk_bytes=50_000)
        got, expected = _tables(Warehouse(str(tmp_path / name), "d")), _tables(Warehouse(str(tmp_path / f"{name}-local"), "d"))
        for table in TABLES:
            assert got[table].equals(expected[table]), (name, table)


@pytest.mark.parametrize("allowed_failures", ["3", "0"], ids=["retried", "not-retried"])
def test_a_killed_worker_is_retried_or_nothing_is_committed(tmp_path, allowed_failures):
    """SIGKILL one worker process while tasks run.

    With Dask's default of 3 allowed failures the scheduler reruns the lost tasks on the
    other worker and the run commits the same tables as a local run; with none allowed
    the run fails and the previous version stays exactly as it was, without stray parts.
    """
    synth.generate(tmp_path / "synth", images=300, seed=7)
    src = str(tmp_path / "synth" / "annotations")
    root = tmp_path / "wh"
    wh = Warehouse(str(root), "d")
    run_ingest([src], warehouse=str(root), dataset="d", workers=1, chunk_bytes=20_000)
    before = _tables(wh)
    manifest_before = (root / "d" / MANIFEST).read_bytes()
    parts_before = _parts(root / "d")

    config = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": allowed_failures}
    with DaskCluster(tmp_path / "dask", config=config) as cluster, \
            Client(cluster.address, timeout="20s", set_as_default=False) as watcher:
        address, victim = sorted(cluster.worker_pids().items())[0]
        killed = []

        def running(dask_worker) -> list[str]:
            return [str(ts.key) for ts in dask_worker.state.all_running_tasks]

        def progress(phase, done, total):
            if phase == "ingest" and done >= 3 and not killed:
                assert total - done > 10, "too few tasks left to kill a worker mid-ingest"
                deadline = time.monotonic() + 10
                while not (keys := watcher.run(running, workers=[address])[address]):  # mid-task only
                    assert time.monotonic() < deadline, "the worker ran no task to kill it in"
                os.kill(victim, signal.SIGKILL)
                killed.append(keys)

        def ingest():
            return run_ingest([src], warehouse=str(root), dataset="d", scheduler=cluster.address,
                              chunk_bytes=20_000, progress=progress)

        if allowed_failures == "0":
            with pytest.raises(CocolakeError, match="Dask workers died while running task .*nothing was committed"):
                ingest()
            assert killed
            assert (root / "d" / MANIFEST).read_bytes() == manifest_before
            assert _parts(root / "d") == parts_before
            return
        report = ingest()
        cluster.wait_for_workers(2)  # the nanny restarted the worker it lost
    assert killed and killed[0][0].split("-")[0] in ("chunk", "sizes", "info"), killed  # a task of the ingest
    assert report.version == 2
    after = _tables(wh)
    for table in TABLES:
        assert after[table].equals(before[table]), table
    # the new version's parts, and the previous version's (kept one commit for readers)
    m = wh.require_manifest()
    assert set(_parts(root / "d")) == {p.path for p in m.parts} | set(m.previous_parts)


def test_the_command_runs_on_the_cluster(dask_cluster, coco_mini, mini_warehouse, tmp_path):
    cocolake = Path(sys.executable).parent / "cocolake"
    done = subprocess.run([str(cocolake), "ingest", "--source", str(coco_mini / "annotations"), "--warehouse",
                           str(tmp_path), "--dataset", "d", "--scheduler", dask_cluster, "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "version 1" in done.stdout
    got, expected = _tables(Warehouse(str(tmp_path), "d")), _tables(Warehouse(*mini_warehouse))
    for table in TABLES:
        assert got[table].equals(expected[table]), table


def test_local_cluster_workers_get_the_malloc_thresholds_of_one_process():
    """The mmap threshold is set so that pycocotools' per-polygon merge buffers come from the
    heap rather than a fresh mmap each, and the trim threshold (Dask's is 64 kB) so that the
    heap keeps what the next chunk's buffers need instead of faulting it in again."""
    from pipeline.ingest.cluster import dask_client

    def environ():
        return os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_")

    with dask_client(workers=2) as client:
        got = set(client.run(environ).values())
    assert got == {(str(32 << 20), str(64 << 20))}


def test_local_cluster_workers_are_forks_of_one_server_and_see_the_environment_of_now(monkeypatch):
    """The workers are forked from one fork server (which imported the task modules once), and a
    variable set after that server started still reaches the next cluster's workers."""
    import multiprocessing

    import psutil

    from pipeline.ingest.cluster import dask_client

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform")

    def parent():
        server = psutil.Process().parent()
        return server.pid, " ".join(server.cmdline()), os.environ.get("COCOLAKE_TEST_LATE")

    with dask_client(workers=2) as client:  # starts the fork server, if no earlier test did
        client.run(parent)
    monkeypatch.setenv("COCOLAKE_TEST_LATE", "seen")
    with dask_client(workers=2) as client:
        got = list(client.run(parent).values())
    assert len(got) == 2
    assert all("multiprocessing.forkserver" in cmd and late == "seen" for _, cmd, late in got)
    assert got[0][0] == got[1][0]  # one server


_COORDINATOR = """
import sys
from pipeline.cli import main
code = main(["ingest", "--source", sys.argv[1], "--warehouse", sys.argv[2], "--dataset", "d",
             "--workers", "2", "--no-progress"])
print(code, sorted(m for m in ("pandas", "pipeline.ingest.tasks") if m in sys.modules))
"""


def test_the_process_that_runs_a_local_cluster_imports_no_pandas(coco_mini, tmp_path):
    """The workers convert Python values with pyarrow (which imports pandas, 0.5 s); the
    process that scans and commits converts none, and distributed does not import its
    fork-server preload list there either, beside the scan."""
    import importlib.util

    import multiprocessing

    if importlib.util.find_spec("pandas") is None:
        pytest.skip("pandas is not installed: nothing could import it")
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform")
    done = subprocess.run([sys.executable, "-c", _COORDINATOR, str(coco_mini / "annotations" / "instances_val2017.json"),
                           str(tmp_path / "wh")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 ['pipeline.ingest.tasks']", done.stdout


def test_local_cluster_workers_start_warm_and_without_the_dashboard_samplers():
    """Each worker has the task modules imported before its first task and runs no
    statistical profiler; it runs as without pandas: pyarrow converts Python lists without
    importing it (0.5 s per process), and an import of it fails as if it were not installed."""
    import dask

    from pipeline.ingest.cluster import dask_client

    def state():
        import pyarrow as pa

        converted = pa.array([{"a": [1.5, None]}, None]).to_pylist()  # where pyarrow looks for pandas
        try:
            import pandas  # noqa: F401
            blocked = False
        except ModuleNotFoundError:
            blocked = True
        return ("pipeline.ingest.tasks" in sys.modules, "pandas" in sys.modules, blocked, converted,
                dask.config.get("distributed.worker.profile.enabled"))

    with dask_client(workers=2) as client:
        got = list(client.run(state).values())
    assert got == [(True, False, True, [{"a": [1.5, None]}, None], False)] * 2
    import importlib.util

    if importlib.util.find_spec("pandas") is not None:
        import pandas  # noqa: F401 - the process that started the cluster still can
    assert "pipeline.ingest.warm" not in dask.config.get("distributed.worker.preload", [])  # restored

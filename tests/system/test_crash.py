"""Crashes and concurrent readers: the real ``cocolake ingest`` killed at known points.

The ingest's test hook (``COCOLAKE_TEST_PAUSE_AT``, see ``_test_pause`` in
pipeline/ingest/run.py) makes the command write a marker file and wait at a named stage; the test then kills its whole
process group or reads the warehouse while it waits. The warehouse starts at a committed
version made of coco-mini; the killed run re-ingests ``instances_val2017.json`` with other
content (its first 40 images), so an old and a new version differ in every table it feeds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from pipeline.ingest.run import run_ingest
from pipeline.schema import TABLES
from pipeline.query.views import connect, fetch_arrow, read_current
from pipeline.errors import WarehouseError
from pipeline.warehouse import LOCK, MANIFEST, Part, Warehouse, write_part

DATASET = "d"
CHUNK_MB = 0.02  # many small tasks, so that a run can be stopped between them
COUNTS_SQL = ("SELECT (SELECT count(*) FROM raw_images) AS images, (SELECT count(*) FROM raw_annotations) "
              "AS annotations, (SELECT count(*) FROM raw_categories) AS categories, "
              "(SELECT count(*) FROM raw_info) AS info")


def _snapshot(warehouse: Path) -> dict[str, pa.Table]:
    """Every raw table of the current version, read through the views (DuckDB)."""
    con = connect(str(warehouse), DATASET, functions=False)
    try:
        return {t: fetch_arrow(con.sql(f"SELECT * FROM raw_{t}")) for t in TABLES}
    finally:
        con.close()


def _assert_same(got: dict[str, pa.Table], expected: dict[str, pa.Table]) -> None:
    for table in TABLES:
        assert got[table].num_rows == expected[table].num_rows, table
        assert got[table].equals(expected[table]), table


def _files(warehouse: Path) -> set[str]:
    root = warehouse / DATASET
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _assert_no_strays(warehouse: Path) -> None:
    """On disk: the manifest, its parts, the writer lock, and in ``_trash/`` the parts of the
    version it replaced (kept one commit for readers that opened that version); nothing besides."""
    m = Warehouse(str(warehouse), DATASET).require_manifest()
    assert _files(warehouse) == {MANIFEST, LOCK} | {p.path for p in m.parts} | set(m.previous_parts)
    assert all(p.startswith("_trash/") for p in m.previous_parts)
    _assert_table_folders_hold_the_manifest(warehouse)


def _assert_table_folders_hold_the_manifest(warehouse: Path) -> None:
    m = Warehouse(str(warehouse), DATASET).require_manifest()
    assert {f for f in _files(warehouse) if not f.startswith("_")} == {p.path for p in m.parts}


def _counts(warehouse: Path) -> tuple:
    """The counts of one version, as cocolake's readers read (again if a commit intervenes)."""
    return read_current(str(warehouse), DATASET, lambda con: tuple(con.execute(COUNTS_SQL).fetchone()),
                        functions=False)


@pytest.fixture(scope="module")
def versions(coco_mini, tmp_path_factory):
    """(base warehouse, new source file, old tables, new tables, old counts, new counts).

    The base warehouse is at version 2 (coco-mini ingested twice), so that it keeps the
    previous version's parts and the next commit has garbage to collect. Tests copy it.
    """
    tmp = tmp_path_factory.mktemp("crash")
    doc = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    doc["images"] = doc["images"][:40]
    kept = {img["id"] for img in doc["images"]}
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in kept]
    new_source = tmp / "new" / "instances_val2017.json"
    new_source.parent.mkdir()
    new_source.write_text(json.dumps(doc))

    base = tmp / "base"
    for _ in range(2):
        run_ingest([str(coco_mini / "annotations")], warehouse=str(base), dataset=DATASET, workers=1,
                   chunk_bytes=int(CHUNK_MB * (1 << 20)))
    assert Warehouse(str(base), DATASET).require_manifest().previous_parts
    reference = tmp / "reference"
    shutil.copytree(base, reference)
    run_ingest([str(new_source)], warehouse=str(reference), dataset=DATASET, workers=1,
               chunk_bytes=int(CHUNK_MB * (1 << 20)))
    old, new = _snapshot(base), _snapshot(reference)
    assert old["annotations"].num_rows != new["annotations"].num_rows
    return base, new_source, old, new, _counts(base), _counts(reference)


def _copy(base: Path, tmp_path: Path) -> Path:
    warehouse = tmp_path / "wh"
    shutil.copytree(base, warehouse)
    return warehouse


def _start_ingest(source: Path, warehouse: Path, marker: Path, pause_at: str, workers: int = 1) -> subprocess.Popen:
    """The real command, in a process group of its own, told to wait at ``pause_at``."""
    env = {**os.environ, "COCOLAKE_TEST_PAUSE_AT": pause_at, "COCOLAKE_TEST_PAUSE_FILE": str(marker)}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "ingest", "--source", str(source), "--warehouse", str(warehouse),
         "--dataset", DATASET, "--workers", str(workers), "--chunk-mb", str(CHUNK_MB), "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_for(marker: Path, proc: subprocess.Popen, stage: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (marker.exists() and marker.read_text() == stage):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ingest ended (status {proc.returncode}) before stage {stage}:\n{err.decode()}")
        if time.monotonic() > deadline:
            _kill_group(proc)
            pytest.fail(f"ingest did not reach stage {stage} in {timeout:.0f} s")
        time.sleep(0.02)


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(30)
    if sig == signal.SIGKILL:  # the whole group: Dask worker processes too
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


# (stage, workers): the planning scan; 3 chunk tasks done; every part written, manifest not
# yet; manifest written, garbage not yet collected; and with two Dask worker processes
# killed along with the command while they write parts
KILL_POINTS = [
    ("scan", 1),
    ("ingest:3", 1),
    ("commit", 1),
    ("gc", 1),
    pytest.param("ingest:3", 2, marks=pytest.mark.slow, id="ingest:3-2-workers"),
]


@pytest.mark.parametrize(("stage", "workers"), KILL_POINTS)
def test_sigkill_keeps_the_previous_version_and_the_next_run_completes(versions, tmp_path, stage, workers):
    base, new_source, old, new, _, _ = versions
    warehouse = _copy(base, tmp_path)
    manifest_before = (warehouse / DATASET / MANIFEST).read_bytes()
    files_before = _files(warehouse)
    marker = tmp_path / "paused"
    proc = _start_ingest(new_source, warehouse, marker, stage, workers)
    _wait_for(marker, proc, stage)
    _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL

    leftovers = _files(warehouse) - files_before
    if stage == "gc":
        # the new version is committed: readers see it whole; old garbage is still there
        _assert_same(_snapshot(warehouse), new)
        assert (warehouse / DATASET / MANIFEST).read_bytes() != manifest_before
    else:
        # nothing committed: the same manifest, the same rows, whatever the run left behind
        assert (warehouse / DATASET / MANIFEST).read_bytes() == manifest_before
        _assert_same(_snapshot(warehouse), old)
        if stage != "scan":
            assert any(f.endswith(".parquet") for f in leftovers), "the kill came before any part was written"

    rerun = run_ingest([str(new_source)], warehouse=str(warehouse), dataset=DATASET, workers=1,
                       chunk_bytes=int(CHUNK_MB * (1 << 20)))
    assert rerun.version == (4 if stage == "gc" else 3)
    _assert_same(_snapshot(warehouse), new)
    _assert_no_strays(warehouse)


def test_a_half_written_manifest_is_never_read_and_is_collected(versions, tmp_path):
    """A kill while the manifest is written leaves a temporary file; the manifest is intact."""
    base, new_source, old, new, _, _ = versions
    warehouse = _copy(base, tmp_path)
    half = warehouse / DATASET / f".{MANIFEST}.0123abcd.tmp"
    half.write_bytes((warehouse / DATASET / MANIFEST).read_bytes()[:100])
    _assert_same(_snapshot(warehouse), old)
    run_ingest([str(new_source)], warehouse=str(warehouse), dataset=DATASET, workers=1,
               chunk_bytes=int(CHUNK_MB * (1 << 20)))
    assert not half.exists()
    _assert_no_strays(warehouse)


@pytest.mark.parametrize("stage", ["ingest:3", "gc"])
def test_ctrl_c_removes_the_parts_of_an_uncommitted_run_only(versions, tmp_path, stage):
    """SIGINT: before the manifest is written the run removes its parts; after, it keeps them
    (they are the committed version) and still moves the replaced version out of the table
    folders."""
    base, new_source, old, new, _, _ = versions
    warehouse = _copy(base, tmp_path)
    files_before = _files(warehouse)
    marker = tmp_path / "paused"
    proc = _start_ingest(new_source, warehouse, marker, stage)
    _wait_for(marker, proc, stage)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    if stage == "gc":
        _assert_same(_snapshot(warehouse), new)
    else:
        _assert_same(_snapshot(warehouse), old)
        assert _files(warehouse) == files_before
    _assert_no_strays(warehouse)


def test_removing_a_failed_runs_parts_spares_what_the_manifest_lists(tmp_path):
    """A run that fails after its manifest was written must not delete the committed parts."""
    from pipeline.schema import schema_for

    wh = Warehouse(str(tmp_path), DATASET)
    rel = Warehouse.part_rel("licenses", "val", 0)
    table = pa.Table.from_pylist([{"id": 1, "name": "l", "url": None, "extra": None, "raw": None,
                                   "source_file": "a.json", "kind": "instances", "record_index": 0}],
                                 schema=schema_for("licenses"))
    write_part(wh.fs, f"{wh.root}/{rel}", [table], schema_for("licenses"))
    stray = Warehouse.part_rel("licenses", "val", 1)
    write_part(wh.fs, f"{wh.root}/{stray}", [table], schema_for("licenses"))
    wh.commit([Part("licenses", "val", "a.json", rel, 1)], {("val", "a.json")}, [], collect=False)
    wh.remove_parts([rel, stray])
    assert (tmp_path / DATASET / rel).exists() and not (tmp_path / DATASET / stray).exists()
    assert wh.read_table("licenses").num_rows == 1


def test_one_writer_at_a_time_and_a_killed_writer_holds_no_lock(versions, tmp_path):
    """A second ingest of the dataset fails at once while one runs (it would reuse the part
    numbers of the first and collect its uncommitted parts as garbage); once the first is
    killed, the lock is gone with it."""
    base, new_source, old, new, _, _ = versions
    warehouse = _copy(base, tmp_path)
    marker = tmp_path / "paused"
    proc = _start_ingest(new_source, warehouse, marker, "ingest:3")
    try:
        _wait_for(marker, proc, "ingest:3")
        with pytest.raises(WarehouseError, match="another run is writing this dataset"):
            run_ingest([str(new_source)], warehouse=str(warehouse), dataset=DATASET, workers=1)
        _assert_same(_snapshot(warehouse), old)
    finally:
        _kill_group(proc)
    run_ingest([str(new_source)], warehouse=str(warehouse), dataset=DATASET, workers=1,
               chunk_bytes=int(CHUNK_MB * (1 << 20)))
    _assert_same(_snapshot(warehouse), new)
    _assert_no_strays(warehouse)


# ------------------------------------------------------------------ readers during an ingest

class _Reader(threading.Thread):
    """Counts rows of several tables in one query, over and over, each time on a new connection."""

    def __init__(self, warehouse: Path):
        super().__init__(daemon=True)
        self.warehouse = warehouse
        self.seen: list[tuple] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.seen.append(_counts(self.warehouse))
            except BaseException as err:  # noqa: BLE001 - reported by the test
                self.errors.append(err)


def _cli_counts(warehouse: Path) -> tuple:
    done = subprocess.run([sys.executable, "-m", "pipeline", "sql", "--warehouse", str(warehouse), "--dataset",
                           DATASET, "--format", "json", COUNTS_SQL], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)[0]
    return (row["images"], row["annotations"], row["categories"], row["info"])


@pytest.mark.slow
def test_readers_see_the_old_or_the_new_version_never_a_mix(versions, coco_mini, tmp_path):
    """Readers run all through an ingest; at each stage the test also asks ``cocolake sql``.

    While the new parts are written and until the manifest is replaced readers see the old
    version; from then on the new one, even while the replaced parts still lie beside it.
    The commit then moves the replaced parts to ``_trash/``: a connection opened on the old
    version fails to open them, and ``read_current`` (what ``cocolake sql`` runs) reads again
    on the new version; the readers here loop through it and never fail.
    """
    base, new_source, _, _, old_counts, new_counts = versions
    old_source = coco_mini / "annotations" / new_source.name
    warehouse = _copy(base, tmp_path)
    stale = connect(str(warehouse), DATASET, functions=False)
    reader = _Reader(warehouse)
    reader.start()
    marker = tmp_path / "paused"
    # (source, stage, what readers see there): old -> new -> old -> new
    runs = [(new_source, "ingest:2", old_counts), (old_source, "commit", new_counts), (new_source, "gc", new_counts)]
    proc = None
    try:
        for n, (source, stage, expected) in enumerate(runs):
            proc = _start_ingest(source, warehouse, marker, stage)
            _wait_for(marker, proc, stage)
            assert _cli_counts(warehouse) == expected, stage
            marker.unlink()
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            if n == 0:
                # opened before this commit: its replaced parts have left the table folders;
                # the query fails rather than read a mix
                with pytest.raises(duckdb.IOException):
                    stale.execute(COUNTS_SQL).fetchone()
                stale.close()
                _assert_table_folders_hold_the_manifest(warehouse)
    finally:
        reader.stop.set()
        reader.join(30)
        if proc is not None and proc.poll() is None:
            _kill_group(proc)
    assert not reader.errors, reader.errors[:3]
    assert set(reader.seen) <= {old_counts, new_counts}
    assert old_counts in reader.seen and new_counts in reader.seen

"""Other tools read the table folders directly: each holds exactly the parts the manifest lists.

pyarrow.dataset, DuckDB's ``read_parquet(..., hive_partitioning = true)`` and (on local
folders) polars' ``scan_parquet(..., hive_partitioning=True)`` over each
``<dataset>/<table>/`` folder must give the rows of the views after re-ingests (the replaced
parts leave for ``_trash/``), after a failed ingest, after a SIGKILLed one followed by a good
one, and after ``cocolake vacuum``. The same on ``s3://`` is in ``test_s3.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import duckdb
import fsspec
import polars as pl
import pyarrow.dataset as ds
import pytest

from pipeline.errors import BadFileError
from pipeline.ingest.run import run_ingest
from pipeline.schema import TABLES, partition_key, schema_for
from pipeline.query.views import connect, read_current
from pipeline.warehouse import LOCK, MANIFEST, Warehouse
from tests.system.test_crash import CHUNK_MB, DATASET, _kill_group, _start_ingest, _wait_for

CHUNK = int(CHUNK_MB * (1 << 20))


def _columns(table: str) -> list[str]:
    return [f.name for f in schema_for(table)] + [partition_key(table)]


def _rows(rows) -> list[tuple]:
    return sorted(tuple(repr(v) for v in row) for row in rows)


def view_rows(warehouse: str, dataset: str, storage_options: dict | None = None) -> dict[str, list[tuple]]:
    """Every row of each table (every column and the partition), through the views."""
    con = connect(warehouse, dataset, storage_options=storage_options, functions=False)
    try:
        return {t: _rows(con.execute(f"SELECT {', '.join(_columns(t))} FROM raw_{t}").fetchall()) for t in TABLES}
    finally:
        con.close()


def plain_rows(warehouse: str, dataset: str, storage_options: dict | None = None) -> dict[str, dict[str, list]]:
    """The same rows read from each table folder by pyarrow.dataset and by DuckDB, as a user would."""
    wh = Warehouse(warehouse, dataset, storage_options)
    con = duckdb.connect()
    if wh.protocol not in ("file", "local"):
        con.register_filesystem(wh.fs)
    found: dict[str, dict[str, list]] = {}
    for table in TABLES:
        columns = _columns(table)
        folder = f"{wh.root}/{table}"
        if not wh.fs.exists(folder):
            found[table] = {"pyarrow": [], "duckdb": []}
            continue
        dataset_ = ds.dataset(folder, format="parquet", partitioning="hive", filesystem=wh.fs)
        t = dataset_.to_table(columns=columns)
        by_pyarrow = _rows(zip(*(t.column(c).to_pylist() for c in columns)))
        by_duckdb = _rows(con.execute(
            f"SELECT {', '.join(columns)} FROM read_parquet($1, hive_partitioning = true)",
            [wh.url(f"{table}/**/*.parquet")]).fetchall())
        found[table] = {"pyarrow": by_pyarrow, "duckdb": by_duckdb}
        if wh.protocol in ("file", "local"):
            frame = pl.scan_parquet(wh.url(f"{table}/**/*.parquet"), hive_partitioning=True).select(columns)
            found[table]["polars"] = _rows(frame.collect().iter_rows())
    con.close()
    return found


def assert_plain_readers_see_the_views(warehouse: str, dataset: str, storage_options: dict | None = None) -> None:
    expected = view_rows(warehouse, dataset, storage_options)
    got = plain_rows(warehouse, dataset, storage_options)
    assert sum(len(v) for v in expected.values()) > 0
    for table in TABLES:
        for reader, rows in got[table].items():
            assert len(rows) == len(expected[table]), (table, reader)
            assert rows == expected[table], (table, reader)


def assert_table_folders_hold_the_manifest(warehouse: str, dataset: str, storage_options: dict | None = None):
    wh = Warehouse(warehouse, dataset, storage_options)
    m = wh.require_manifest()
    on_disk = {rel for table in TABLES for rel in wh.files_under(table)}
    assert on_disk == {p.path for p in m.parts}


def _first_images(coco_mini, n: int) -> dict:
    doc = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    keep = {img["id"] for img in doc["images"][:n]}
    return {**doc, "images": doc["images"][:n], "annotations": [a for a in doc["annotations"] if a["image_id"] in keep]}


@pytest.mark.slow
def test_table_folders_read_by_other_tools_equal_the_views(coco_mini, tmp_path):
    warehouse = str(tmp_path / "wh")
    alt = tmp_path / "alt" / "instances_val2017.json"
    alt.parent.mkdir()
    alt.write_text(json.dumps(_first_images(coco_mini, 40)))
    bad = tmp_path / "bad" / "instances_val2017.json"
    bad.parent.mkdir()
    doc = _first_images(coco_mini, 30)
    doc["annotations"][-1]["id"] = doc["annotations"][0]["id"]  # found after every part is written
    bad.write_text(json.dumps(doc))

    def check():
        assert_table_folders_hold_the_manifest(warehouse, DATASET)
        assert_plain_readers_see_the_views(warehouse, DATASET)

    run_ingest([str(coco_mini / "annotations")], warehouse=warehouse, dataset=DATASET, workers=1, chunk_bytes=CHUNK)
    check()
    # re-ingests: the replaced parts leave the table folders
    for source in (coco_mini / "annotations" / "instances_val2017.json", alt):
        run_ingest([str(source)], warehouse=warehouse, dataset=DATASET, workers=1, chunk_bytes=CHUNK)
        check()
    m = Warehouse(warehouse, DATASET).require_manifest()
    assert m.previous_parts and all(p.startswith("_trash/") for p in m.previous_parts)
    before = view_rows(warehouse, DATASET)
    # a failed ingest: its parts are gone, the version stays
    with pytest.raises(BadFileError, match="duplicate annotation id"):
        run_ingest([str(bad)], warehouse=warehouse, dataset=DATASET, workers=1, chunk_bytes=CHUNK)
    assert view_rows(warehouse, DATASET) == before
    check()
    # a SIGKILLed ingest leaves parts in the table folders; the next good run removes them
    marker = tmp_path / "paused"
    proc = _start_ingest(coco_mini / "annotations" / "instances_val2017.json", tmp_path / "wh", marker, "ingest:3")
    _wait_for(marker, proc, "ingest:3")
    _kill_group(proc)
    with pytest.raises(AssertionError):
        assert_table_folders_hold_the_manifest(warehouse, DATASET)
    run_ingest([str(alt)], warehouse=warehouse, dataset=DATASET, workers=1, chunk_bytes=CHUNK)
    check()


def test_vacuum_command_removes_a_killed_runs_leftovers_and_the_trash(coco_mini, tmp_path):
    """The real ``cocolake vacuum``, run where a user would, with the default warehouse."""
    warehouse = tmp_path / "warehouse"
    for _ in range(2):  # the second ingest puts the first one's parts in the trash
        run_ingest([str(coco_mini / "annotations" / "instances_val2017.json")], warehouse=str(warehouse),
                   dataset=DATASET, workers=1, chunk_bytes=CHUNK)
    marker = tmp_path / "paused"
    proc = _start_ingest(coco_mini / "annotations" / "instances_val2017.json", warehouse, marker, "ingest:3")
    _wait_for(marker, proc, "ingest:3")
    _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    before = view_rows(str(warehouse), DATASET)
    root = warehouse / DATASET
    m = Warehouse(str(warehouse), DATASET).require_manifest()
    stray = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {MANIFEST, LOCK} - {
        p.path for p in m.parts}
    assert any(s.startswith("_trash/") for s in stray) and any(not s.startswith("_") for s in stray)
    size = sum((root / s).stat().st_size for s in stray)

    done = subprocess.run([sys.executable, "-m", "pipeline", "vacuum"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{DATASET}: removed {len(stray)} files (")
    from pipeline.cli.vacuum import human_bytes

    assert human_bytes(size) in done.stdout
    assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} == {MANIFEST, LOCK} | {
        p.path for p in m.parts}
    assert view_rows(str(warehouse), DATASET) == before
    assert_plain_readers_see_the_views(str(warehouse), DATASET)
    again = subprocess.run([sys.executable, "-m", "pipeline", "vacuum", "--dataset", DATASET], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == f"{DATASET}: removed 0 files (0 bytes)\n"


def test_vacuum_refuses_while_a_run_writes_and_removes_nothing(coco_mini, tmp_path):
    warehouse = tmp_path / "warehouse"
    run_ingest([str(coco_mini / "annotations" / "instances_val2017.json")], warehouse=str(warehouse),
               dataset=DATASET, workers=1, chunk_bytes=CHUNK)
    marker = tmp_path / "paused"
    proc = _start_ingest(coco_mini / "annotations" / "instances_val2017.json", warehouse, marker, "ingest:3")
    try:
        _wait_for(marker, proc, "ingest:3")
        files = sorted(p for p in (warehouse / DATASET).rglob("*") if p.is_file())
        done = subprocess.run([sys.executable, "-m", "pipeline", "vacuum", "--warehouse", str(warehouse),
                               "--dataset", DATASET], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and "another run is writing this dataset" in done.stderr
        assert sorted(p for p in (warehouse / DATASET).rglob("*") if p.is_file()) == files
        marker.unlink()  # the run goes on and commits its parts, none of them lost
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    assert_table_folders_hold_the_manifest(str(warehouse), DATASET)
    assert_plain_readers_see_the_views(str(warehouse), DATASET)


def test_vacuum_of_a_folder_without_datasets_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipeline", "vacuum", "--warehouse", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no datasets here" in done.stderr
    done = subprocess.run([sys.executable, "-m", "pipeline", "vacuum", "--warehouse", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no warehouse here" in done.stderr
    assert not (tmp_path / "none").exists()
    assert fsspec.filesystem("file").ls(str(tmp_path)) == []


def test_read_current_runs_again_on_the_new_version_when_a_commit_moves_its_parts(tmp_path):
    """A commit between opening a connection and querying it: the query fails on the moved
    part, and runs again, whole, on the new version; an error of the query itself is raised."""
    from tests.test_warehouse import _write

    wh = Warehouse(str(tmp_path), DATASET)
    wh.commit([_write(wh, "val", "a.json", 0, 2)], {("val", "a.json")}, [])
    calls, errors = [], []

    def work(con):
        calls.append(con)
        if len(calls) == 1:  # another writer replaces a.json's rows meanwhile
            wh.commit([_write(wh, "val", "a.json", 1, 5)], {("val", "a.json")}, [])
        try:
            return con.execute("SELECT count(*) FROM raw_licenses").fetchone()[0]
        except duckdb.Error as err:
            errors.append(err)
            raise

    assert read_current(str(tmp_path), DATASET, work, functions=False) == 5
    assert len(calls) == 2
    assert len(errors) == 1 and isinstance(errors[0], duckdb.IOException)  # its version's part was gone
    calls.clear()
    with pytest.raises(duckdb.CatalogException):
        read_current(str(tmp_path), DATASET, lambda con: calls.append(con) or con.execute("SELECT * FROM nope"),
                     functions=False)
    assert len(calls) == 1

"""warehouse: manifest commit, replacement per (split, source file), garbage collection."""

from __future__ import annotations

import json

import fsspec
import pyarrow as pa
import pytest

from pipeline.errors import WarehouseError
from pipeline.schema import schema_for
from pipeline.warehouse import MANIFEST, Part, Warehouse, write_part


def _licenses(n: int, source: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": i, "name": f"l{i}", "url": None, "extra": None, "raw": None, "source_file": source,
          "kind": "instances", "record_index": i} for i in range(n)],
        schema=schema_for("licenses"),
    )


def _write(wh: Warehouse, split: str, source: str, n: int, rows: int) -> Part:
    rel = Warehouse.part_rel("licenses", split, n)
    written = write_part(wh.fs, f"{wh.root}/{rel}", [_licenses(rows, source)], schema_for("licenses"))
    return Part("licenses", split, source, rel, written)


def test_commit_replace_and_collect(tmp_path):
    wh = Warehouse(str(tmp_path), "d")
    assert wh.read_manifest() is None
    with pytest.raises(WarehouseError, match="run `cocolake ingest` first"):
        wh.require_manifest()
    a = _write(wh, "val", "a.json", wh.next_part_number("val", None), 2)
    m1 = wh.commit([a], {("val", "a.json")}, [])
    assert m1.version == 1 and m1.files("licenses") == [a.path]
    # another file of the same split is added beside it
    b = _write(wh, "val", "b.json", wh.next_part_number("val", m1), 3)
    m2 = wh.commit([b], {("val", "b.json")}, [])
    assert sorted(m2.files("licenses")) == sorted([a.path, b.path])
    assert wh.read_table("licenses").num_rows == 5
    # re-ingesting a.json replaces its rows only; the replaced file stays one version
    a2 = _write(wh, "val", "a.json", wh.next_part_number("val", m2), 4)
    assert a2.path not in (a.path, b.path)
    m3 = wh.commit([a2], {("val", "a.json")}, [])
    assert sorted(m3.files("licenses")) == sorted([a2.path, b.path])
    assert m3.previous_parts == [a.path]
    assert (tmp_path / "d" / a.path).exists()
    assert wh.read_table("licenses").num_rows == 7
    # a stray file (a crashed run) is never read and goes at the next commit, with a.path
    stray = tmp_path / "d" / Warehouse.part_rel("licenses", "val", 99)
    stray.write_bytes(b"junk")
    assert wh.read_table("licenses").num_rows == 7
    m4 = wh.commit([], set(), [])
    assert not stray.exists() and not (tmp_path / "d" / a.path).exists()
    assert sorted(m4.files("licenses")) == sorted([a2.path, b.path])


def test_manifest_is_written_atomically_and_validated(tmp_path):
    wh = Warehouse(str(tmp_path), "d")
    wh.commit([], set(), [])
    names = {p.name for p in (tmp_path / "d").iterdir()}
    assert names == {MANIFEST}
    (tmp_path / "d" / MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(WarehouseError, match="not a cocolake manifest"):
        wh.read_manifest()


def test_object_store_layout_in_memory_filesystem():
    fs = fsspec.filesystem("memory")
    wh = Warehouse("memory://wh-test", "d")
    p = _write(wh, "train", "a.json", 0, 3)
    wh.commit([p], {("train", "a.json")}, [])
    assert fs.exists("/wh-test/d/_manifest.json")
    assert wh.read_table("licenses").num_rows == 3
    assert wh.url(p.path).startswith("memory://")


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_dataset_names_are_checked(tmp_path, name):
    with pytest.raises(WarehouseError, match="dataset name"):
        Warehouse(str(tmp_path), name)

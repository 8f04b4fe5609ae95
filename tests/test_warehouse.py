"""warehouse: manifest commit, replacement per (split, source file), garbage collection."""

from __future__ import annotations

import json

import fsspec
import pyarrow as pa
import pytest

from pipeline.errors import WarehouseError
from pipeline.schema import schema_for
from pipeline.warehouse import LOCK, MANIFEST, Part, Warehouse, write_part


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
    # re-ingesting a.json replaces its rows only; the replaced file leaves the table folder
    # for the trash, where it stays one version
    a2 = _write(wh, "val", "a.json", wh.next_part_number("val", m2), 4)
    assert a2.path not in (a.path, b.path)
    m3 = wh.commit([a2], {("val", "a.json")}, [])
    assert sorted(m3.files("licenses")) == sorted([a2.path, b.path])
    assert m3.previous_parts == [f"_trash/v2/{a.path}"]
    assert not (tmp_path / "d" / a.path).exists() and (tmp_path / "d" / m3.previous_parts[0]).exists()
    assert _table_files(tmp_path / "d") == {a2.path, b.path}
    assert wh.read_table("licenses").num_rows == 7
    # the trashed part's number is not reused while it is kept
    assert wh.next_part_number("val", m3) == 3
    # a stray file (a crashed run) is never read and goes at the next commit, with the trash
    stray = tmp_path / "d" / Warehouse.part_rel("licenses", "val", 99)
    stray.write_bytes(b"junk")
    assert wh.read_table("licenses").num_rows == 7
    m4 = wh.commit([], set(), [])
    assert not stray.exists() and not (tmp_path / "d" / "_trash").exists()
    assert sorted(m4.files("licenses")) == sorted([a2.path, b.path])
    assert _table_files(tmp_path / "d") == {a2.path, b.path}


def _table_files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("_")
            and not str(p.relative_to(root)).startswith("_")}


def test_an_old_manifest_with_previous_parts_in_the_table_folders_is_cleaned_by_the_next_commit(tmp_path):
    """Warehouses written before the trash kept the replaced parts beside the current ones."""
    wh = Warehouse(str(tmp_path), "d")
    a = _write(wh, "val", "a.json", 0, 2)
    a2 = _write(wh, "val", "a.json", 1, 3)
    old = {"format": "cocolake-manifest/1", "dataset": "d", "version": 2, "committed_at": None,
           "parts": [Part("licenses", "val", "a.json", a2.path, 3).to_json()], "sources": [],
           "previous_parts": [a.path]}
    (tmp_path / "d" / MANIFEST).write_text(json.dumps(old))
    assert wh.read_table("licenses").num_rows == 3
    assert wh.next_part_number("val", wh.read_manifest()) == 2
    wh.commit([], set(), [])
    assert _table_files(tmp_path / "d") == {a2.path}


def test_vacuum_leaves_the_manifest_its_parts_and_nothing_else(tmp_path):
    wh = Warehouse(str(tmp_path), "d")
    a = _write(wh, "val", "a.json", 0, 2)
    wh.commit([a], {("val", "a.json")}, [])
    a2 = _write(wh, "val", "a.json", 1, 3)
    m = wh.commit([a2], {("val", "a.json")}, [])
    stray = tmp_path / "d" / Warehouse.part_rel("images", "train", 7)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x" * 10)
    trashed = (tmp_path / "d" / m.previous_parts[0]).stat().st_size
    assert wh.vacuum() == (2, trashed + 10)
    names = {str(p.relative_to(tmp_path / "d")) for p in (tmp_path / "d").rglob("*")}
    assert names == {MANIFEST, "licenses", "licenses/split=val", a2.path}
    assert wh.read_table("licenses").num_rows == 3
    assert wh.vacuum() == (0, 0)


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


def block_the_trash(dataset_root) -> None:
    """A file where ``_trash/`` goes: the next commit that replaces parts cannot move them
    there, so its garbage collection fails (a real filesystem error, after the manifest)."""
    import shutil

    trash = dataset_root / "_trash"
    if trash.is_dir():
        shutil.rmtree(trash)
    trash.write_text("in the way")


def test_a_transaction_commits_and_collects_and_holds_the_lock(tmp_path):
    wh = Warehouse(str(tmp_path), "d")
    with wh.transaction() as txn:
        rel = txn.part("licenses", "val", wh.next_part_number("val", None))
        assert rel == Warehouse.part_rel("licenses", "val", 0) and txn.written == [rel]
        write_part(wh.fs, f"{wh.root}/{rel}", [_licenses(2, "a.json")], schema_for("licenses"))
        with pytest.raises(WarehouseError, match="another run is writing this dataset"):
            with wh.transaction():
                pass
        m = txn.commit([Part("licenses", "val", "a.json", rel, 2)], {("val", "a.json")}, [])
    assert m.version == 1 and wh.read_manifest().files("licenses") == [rel]
    with wh.transaction() as txn:  # the lock is released at the end
        a2 = _write(wh, "val", "a.json", wh.next_part_number("val", m), 3)
        txn.commit([a2], {("val", "a.json")}, [])
    assert _table_files(tmp_path / "d") == {a2.path}  # collected at the end: the replaced part is in the trash


def test_a_failed_transaction_removes_its_parts_and_commits_nothing(tmp_path):
    wh = Warehouse(str(tmp_path), "d")
    a = _write(wh, "val", "a.json", 0, 2)
    wh.commit([a], {("val", "a.json")}, [])
    with pytest.raises(ValueError, match="boom"):
        with wh.transaction() as txn:
            rel = txn.part("licenses", "val", 1)
            write_part(wh.fs, f"{wh.root}/{rel}", [_licenses(3, "a.json")], schema_for("licenses"))
            txn.will_write([Warehouse.part_rel("licenses", "val", 2)])  # planned, never written
            raise ValueError("boom")
    assert wh.read_manifest().version == 1 and _table_files(tmp_path / "d") == {a.path}
    with wh.transaction() as txn:  # ended without a commit: the same
        rel = txn.part("licenses", "val", 1)
        write_part(wh.fs, f"{wh.root}/{rel}", [_licenses(3, "a.json")], schema_for("licenses"))
    assert wh.read_manifest().version == 1 and _table_files(tmp_path / "d") == {a.path}


def test_a_failed_first_transaction_leaves_no_dataset_and_no_folder_it_made(tmp_path):
    wh = Warehouse(str(tmp_path / "new" / "wh"), "d")
    with pytest.raises(ValueError, match="boom"):
        with wh.transaction() as txn:
            assert (tmp_path / "new" / "wh" / "d" / LOCK).is_file()
            rel = txn.part("licenses", "val", 0)
            write_part(wh.fs, f"{wh.root}/{rel}", [_licenses(3, "a.json")], schema_for("licenses"))
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "wh" / "d").mkdir(parents=True)  # folders that were there stay, empty or not
    with Warehouse(str(tmp_path / "wh"), "d").transaction():
        pass
    assert [p.name for p in (tmp_path / "wh" / "d").iterdir()] == [LOCK]
    wh = Warehouse(str(tmp_path / "wh"), "e")
    with wh.transaction() as txn:  # a first transaction that commits keeps its lock file
        txn.commit([_write(wh, "val", "a.json", 0, 2)], {("val", "a.json")}, [])
    assert LOCK in {p.name for p in (tmp_path / "wh" / "e").iterdir()}


def test_a_lock_taken_on_a_lock_file_another_writer_removed_is_taken_again(tmp_path, monkeypatch):
    """Between a writer's open of the lock file and its flock, the writer that held the lock
    may have removed the file (its failed first run): that lock is on no file, so it opens again."""
    wh = Warehouse(str(tmp_path), "d")
    import pipeline.writerlock as module

    opened = []

    def open_then_lose_it(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        opened.append(path)
        if len(opened) == 1:
            import os

            os.unlink(path)  # the other writer's clean-up, after this open
            os.rmdir(wh.root)
        return f

    monkeypatch.setattr(module, "open", open_then_lose_it, raising=False)
    with wh.transaction() as txn:
        assert len(opened) == 2 and (tmp_path / "d" / LOCK).is_file()
        with pytest.raises(WarehouseError, match="another run is writing this dataset"):
            with Warehouse(str(tmp_path), "d").writer_lock():
                pass
        txn.commit([_write(wh, "val", "a.json", 0, 2)], {("val", "a.json")}, [])
    assert wh.read_manifest().version == 1


def test_a_failed_garbage_collection_after_the_commit_is_a_warning(tmp_path, caplog):
    wh = Warehouse(str(tmp_path), "d")
    a = _write(wh, "val", "a.json", 0, 2)
    wh.commit([a], {("val", "a.json")}, [])
    block_the_trash(tmp_path / "d")
    with caplog.at_level("WARNING", logger="pipeline.warehouse"):
        with wh.transaction() as txn:
            a2 = _write(wh, "val", "a.json", 1, 3)
            txn.commit([a2], {("val", "a.json")}, [])
    assert "version 2 committed, but removing old parts failed" in caplog.text
    assert wh.read_table("licenses").num_rows == 3  # committed; the old part is still in its folder
    assert _table_files(tmp_path / "d") == {a.path, a2.path}
    with caplog.at_level("WARNING", logger="pipeline.warehouse"):  # also after an error past the commit
        with pytest.raises(ValueError, match="after"):
            with wh.transaction() as txn:
                a3 = _write(wh, "val", "a.json", 2, 4)
                txn.commit([a3], {("val", "a.json")}, [])
                raise ValueError("after the commit")
    assert "version 3 committed, but removing old parts failed" in caplog.text
    assert wh.read_table("licenses").num_rows == 4
    (tmp_path / "d" / "_trash").unlink()
    with wh.transaction() as txn:  # the next commit collects
        txn.commit([], set(), [])
    assert _table_files(tmp_path / "d") == {a3.path}


def test_a_commit_that_changes_a_splits_annotations_drops_its_derived_part(tmp_path):
    """schema.DERIVED_FROM: a category_counts part never outlives the annotations it counts."""
    wh = Warehouse(str(tmp_path), "d")

    def part(table, split, source, n):
        return Part(table, split, source, Warehouse.part_rel(table, split, n), 1)

    ann = {s: part("annotations", s, "i.json", 0) for s in ("train", "val")}
    counts = {s: part("category_counts", s, "", 1) for s in ("train", "val")}
    wh.commit([*ann.values(), *counts.values()], set(), [], collect=False)
    # captions of val: its annotations stay, so do the counts
    m = wh.next_manifest([part("captions", "val", "c.json", 2)], {("val", "c.json")}, [])
    assert set(m.files("category_counts")) == {counts["train"].path, counts["val"].path}
    # val's instances file again: val's counts go (to the trash), train's stay
    m = wh.next_manifest([part("annotations", "val", "i.json", 3)], {("val", "i.json")}, [])
    assert m.files("category_counts") == [counts["train"].path]
    assert f"_trash/v1/{counts['val'].path}" in m.previous_parts
    # val's instances file removed (no new part): its counts go too
    m = wh.next_manifest([], {("val", "i.json")}, [])
    assert m.files("category_counts") == [counts["train"].path] and not m.files("annotations", "val")
    # a new counts part replaces the split's old one
    new = part("category_counts", "val", "", 4)
    m = wh.next_manifest([new], set(), [])
    assert set(m.files("category_counts")) == {counts["train"].path, new.path}

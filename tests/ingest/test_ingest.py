"""ingest end to end on coco-mini: pycocotools is the oracle for masks and loading."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from pycocotools.coco import COCO

from pipeline.ingest.run import run_ingest
from pipeline.warehouse import Warehouse

FILES = [
    "instances_train2017.json",
    "instances_val2017.json",
    "person_keypoints_train2017.json",
    "person_keypoints_val2017.json",
]


@pytest.fixture(scope="module")
def mini(mini_warehouse):
    root, dataset = mini_warehouse
    return Warehouse(root, dataset)


@pytest.mark.parametrize("name", FILES)
def test_every_mask_equals_pycocotools_annToRLE(coco_mini, mini, name):
    coco = COCO(str(coco_mini / "annotations" / name))
    split = name.rsplit("_", 1)[1][:-5]
    rows = mini.read_table("annotations", split).to_pylist()
    rows = {r["id"]: r for r in rows if r["source_file"] == name}
    assert len(rows) == len(coco.anns)
    for ann_id, ann in coco.anns.items():
        expected = coco.annToRLE(ann)
        counts = expected["counts"]
        counts = counts.decode() if isinstance(counts, bytes) else counts
        row = rows[ann_id]
        assert row["rle_counts"] == counts, ann_id
        assert row["rle_size"] == list(expected["size"])
        fmt = "polygon" if isinstance(ann["segmentation"], list) else "uncompressed_rle"
        assert row["segmentation_format"] == fmt
        assert row["image_id"] == ann["image_id"] and row["category_id"] == ann["category_id"]
        assert row["bbox"] == ann["bbox"] and row["area"] == ann["area"] and row["iscrowd"] == ann["iscrowd"]
        if fmt == "polygon":
            assert row["polygons"] == ann["segmentation"]


def test_tables_match_the_source_files(coco_mini, mini):
    for split in ("train2017", "val2017"):
        inst = json.loads((coco_mini / "annotations" / f"instances_{split}.json").read_text())
        caps = json.loads((coco_mini / "annotations" / f"captions_{split}.json").read_text())
        kps = json.loads((coco_mini / "annotations" / f"person_keypoints_{split}.json").read_text())
        images = mini.read_table("images", split).to_pylist()
        inst_images = sorted((r for r in images if r["kind"] == "instances"), key=lambda r: r["record_index"])
        assert [r["id"] for r in inst_images] == [i["id"] for i in inst["images"]]
        assert inst_images[0]["file_name"] == inst["images"][0]["file_name"]
        assert inst_images[0]["coco_url"] == inst["images"][0]["coco_url"]
        captions = sorted(mini.read_table("captions", split).to_pylist(), key=lambda r: r["record_index"])
        assert [(c["id"], c["image_id"], c["caption"]) for c in captions] == [
            (a["id"], a["image_id"], a["caption"]) for a in caps["annotations"]
        ]
        kp = sorted(mini.read_table("keypoints", split).to_pylist(), key=lambda r: r["record_index"])
        assert [(k["annotation_id"], k["num_keypoints"], k["keypoints"]) for k in kp] == [
            (a["id"], a["num_keypoints"], a["keypoints"]) for a in kps["annotations"]
        ]
        cats = mini.read_table("categories", split).to_pylist()
        person = [c for c in cats if c["kind"] == "person_keypoints"][0]
        assert person["keypoints"] == kps["categories"][0]["keypoints"]
        assert person["skeleton"] == kps["categories"][0]["skeleton"]
        info = [r for r in mini.read_table("info", split).to_pylist() if r["source_file"] == f"instances_{split}.json"]
        assert json.loads(info[0]["info"]) == inst["info"]
        assert list(json.loads(info[0]["document"])) == list(inst)


def _tables(root: str) -> dict[str, pa.Table]:
    wh = Warehouse(root, "d")
    m = wh.require_manifest()
    return {t: wh.read_table(t, manifest=m) for t in ("images", "annotations", "keypoints", "captions",
                                                       "categories", "licenses", "info", "rejects")}


@pytest.mark.slow
def test_same_rows_and_files_whatever_the_number_of_workers(coco_mini, tmp_path):
    src = str(coco_mini / "annotations")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_ingest([src], warehouse=one, dataset="d", workers=1, chunk_bytes=50_000)
    run_ingest([src], warehouse=two, dataset="d", workers=2, chunk_bytes=50_000)
    a, b = _tables(one), _tables(two)
    for table in a:
        assert a[table].equals(b[table]), table
    files_one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.parquet"))
    files_two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.parquet"))
    assert files_one == files_two and len(files_one) > 20


def test_reingest_replaces_a_file_and_keeps_the_others(coco_mini, tmp_path):
    ann = coco_mini / "annotations"
    wh = Warehouse(str(tmp_path), "d")
    run_ingest([str(ann / "instances_val2017.json")], warehouse=str(tmp_path), dataset="d", workers=1)
    run_ingest([str(ann / "captions_val2017.json")], warehouse=str(tmp_path), dataset="d", workers=1)
    run_ingest([str(ann / "instances_val2017.json")], warehouse=str(tmp_path), dataset="d", workers=1)
    run_ingest([str(ann / "instances_train2017.json")], warehouse=str(tmp_path), dataset="d", workers=1)
    m = wh.require_manifest()
    assert m.version == 4 and m.splits() == ["train2017", "val2017"]
    assert wh.read_table("annotations", "val2017").num_rows == 624
    assert wh.read_table("captions", "val2017").num_rows == 395
    assert wh.read_table("annotations", "train2017").num_rows == 739


def test_chunks_run_without_the_cyclic_collector_and_restore_it(coco_mini, tmp_path, monkeypatch):
    import gc

    from pipeline.ingest import flatten

    seen = []
    real = flatten.flatten_annotations

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(flatten, "flatten_annotations", spy)
    assert gc.isenabled()
    run_ingest([str(coco_mini / "annotations" / "instances_val2017.json")], warehouse=str(tmp_path),
               dataset="d", workers=1)
    assert seen and not any(seen) and gc.isenabled()


def test_a_failed_garbage_collection_after_the_commit_is_a_warning(coco_mini, tmp_path, caplog):
    from tests.test_warehouse import block_the_trash

    captions = str(coco_mini / "annotations" / "captions_val2017.json")
    run_ingest([captions], warehouse=str(tmp_path), dataset="d", workers=1)
    block_the_trash(tmp_path / "d")
    with caplog.at_level("WARNING"):
        report = run_ingest([captions], warehouse=str(tmp_path), dataset="d", workers=1)
    assert report.version == 2 and "version 2 committed, but removing old parts failed" in caplog.text
    assert Warehouse(str(tmp_path), "d").read_table("captions").num_rows == 395


def test_a_chunk_of_a_seekable_file_is_parsed_in_one_piece(coco_mini, tmp_path):
    # the scan cuts a chunk at the first record end past chunk_bytes: a little more than one
    # sub-batch, read and parsed whole (not scanned again and split before its last record)
    from pipeline.ingest import sources, tasks
    from pipeline.ingest.plan import IngestOptions, plan_file
    from pipeline.ingest.tasks import ChunkTask

    path = coco_mini / "annotations" / "instances_val2017.json"
    (source,) = sources.resolve([str(path)], cache_dir=str(tmp_path / "cache"))
    opts = IngestOptions(chunk_bytes=20_000)
    plan = plan_file(source, opts)
    chunk_tasks = [ChunkTask(plan_source=source, section="annotations", start=a, end=b, first_index=first,
                             context=plan.context, targets=(), sub_batch_bytes=opts.chunk_bytes)
                   for a, b, first in plan.chunks["annotations"]]
    assert len(chunk_tasks) > 10
    assert all(t.end - t.start > t.sub_batch_bytes for t in chunk_tasks[:-1])
    records = []
    for task in chunk_tasks:
        pieces = list(tasks._batches(task))
        assert [(offset, first) for _, offset, first in pieces] == [(task.start, task.first_index)]
        records += json.loads(b"[" + pieces[0][0].strip(b" \t\r\n,") + b"]")
    assert records == json.loads(path.read_bytes())["annotations"]


def test_an_annotations_part_holds_its_rows_grouped_by_category_in_source_order(coco_mini, tmp_path):
    import pyarrow.parquet as pq

    run_ingest([str(coco_mini / "annotations" / "instances_val2017.json")], warehouse=str(tmp_path),
               dataset="d", workers=1, row_group_rows=50)
    wh = Warehouse(str(tmp_path), "d")
    rels = wh.require_manifest().files("annotations")
    assert rels
    with open(coco_mini / "annotations" / "instances_val2017.json", encoding="utf-8") as f:
        source = json.load(f)["annotations"]
    seen = 0
    for rel in rels:
        meta = pq.ParquetFile(wh.url(rel)).metadata
        assert meta.num_row_groups > 1 and all(meta.row_group(i).num_rows <= 50 for i in range(meta.num_row_groups))
        t = pq.read_table(wh.url(rel))
        keys = list(zip(t.column("category_id").to_pylist(), t.column("record_index").to_pylist()))
        assert keys == sorted(keys)  # by category, then source order
        for cid, index in keys:
            assert source[index]["category_id"] == cid
        seen += len(keys)
    assert seen == len(source)


def test_clustering_by_category_is_stable_and_puts_missing_ids_last():
    from pipeline.ingest.tasks import cluster_by_category

    a = pa.table({"category_id": pa.array([3, None, 1], pa.int64()), "record_index": [0, 1, 2]})
    b = pa.table({"category_id": pa.array([1, 3, None], pa.int64()), "record_index": [3, 4, 5]})
    out = cluster_by_category([a, b])
    assert out.column("category_id").to_pylist() == [1, 1, 3, 3, None, None]
    assert out.column("record_index").to_pylist() == [2, 3, 0, 4, 1, 5]


def test_a_chunk_grouped_already_keeps_its_order():
    from pipeline.ingest.tasks import cluster_by_category

    t = pa.table({"category_id": pa.array([1, 1, 2, None], pa.int64()), "record_index": [0, 1, 2, 3]})
    out = cluster_by_category([t])
    assert out.equals(t)
    assert cluster_by_category([t.slice(0, 2), t.slice(2)]).equals(t)

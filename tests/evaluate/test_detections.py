"""detections: loadRes semantics per detection, bad records, runs in the manifest, files that are no results list."""

from __future__ import annotations

import copy
import json
import shutil

import pyarrow as pa
import pytest
from pycocotools.coco import COCO

from pipeline.evaluate import detections as results, metrics as evaluate, store
from pipeline.cli import main
from pipeline.errors import BadFileError, BadRecordError, CocolakeError, WarehouseError
from pipeline.ingest.records import FileContext, ImageSizes
from pipeline.query.views import connect
from pipeline.warehouse import Warehouse

# one 40x30 image, categories 1 and 2; category 1 names 2 keypoints
SIZES = ImageSizes([7], [30], [40], "int64")
CTX = FileContext(source_file="dets.json", kind="results", category_ids=frozenset({1, 2}),
                  category_keypoints={1: 2})
BOX = {"image_id": 7, "category_id": 2, "bbox": [1.5, 2, 10, 4], "score": 0.9}
POLYGON = {"image_id": 7, "category_id": 1, "segmentation": [[2, 2, 20, 3, 12, 25]], "score": 0.5}
KEYPOINTS = {"image_id": 7, "category_id": 1, "keypoints": [3, 4, 1, 13, 24, 2], "score": 0.25}


def flat(records, on_bad_record="error", first_index=0):
    ctx = FileContext(**{**CTX.__dict__, "on_bad_record": on_bad_record})
    return results.flatten_detections(records, ctx, SIZES, "val2017", first_index)


# ---------------------------------------------------------------------------- one chunk, loadRes semantics


def test_box_detection_gets_loadres_id_and_area():
    row = flat([BOX, BOX], first_index=10).tables["predictions"].to_pylist()[1]
    assert row["id"] == 12  # position in the file + 1
    assert row["area"] == 40.0 and row["bbox"] == [1.5, 2, 10, 4]
    assert row["rle_counts"] is None and row["segmentation_format"] == "none"
    assert row["split"] == "val2017" and row["kind"] == "results" and row["record_index"] == 11


def test_polygon_mask_is_encoded_as_pycocotools_on_the_image_size():
    row = flat([POLYGON]).tables["predictions"].to_pylist()[0]
    gt = COCO()
    gt.dataset = {"images": [{"id": 7, "height": 30, "width": 40}], "categories": [{"id": 1}], "annotations": []}
    gt.createIndex()
    ann = dict(POLYGON)
    rle = gt.annToRLE(ann)
    assert row["rle_counts"] == rle["counts"].decode() and row["rle_size"] == [30, 40]
    from pycocotools import mask as cm

    # no box given: loadRes' area is the mask's, its box the mask's box
    assert row["area"] == float(cm.area(rle)) == row["mask_area"]
    assert row["bbox"] == cm.toBbox(rle).tolist()


def test_keypoints_only_detection_gets_the_box_around_its_keypoints():
    row = flat([KEYPOINTS]).tables["predictions"].to_pylist()[0]
    assert row["bbox"] == [3, 4, 10, 20] and row["area"] == 200
    assert row["keypoints"] == [3, 4, 1, 13, 24, 2]


def test_unknown_keys_are_kept():
    row = flat([dict(BOX, id=99, extra_score=[1, 2])]).tables["predictions"].to_pylist()[0]
    assert json.loads(row["extra"]) == {"id": 99, "extra_score": [1, 2]}
    assert row["id"] == 1


@pytest.mark.parametrize("record, message", [
    (dict(BOX, image_id=8), "detection #0: image_id 8 is not an image of split val2017"),
    (dict(BOX, category_id=5), "category_id 5 is not a category of split val2017"),
    ({k: v for k, v in BOX.items() if k != "score"}, "score is missing"),
    (dict(BOX, score="high"), "score \"high\" is not a finite number"),
    (dict(BOX, bbox=[1, 2, 3]), r"bbox \[1,2,3\] is not 4 finite numbers"),
    (dict(BOX, bbox=[1, 2, -3, 4]), "negative width"),
    ({"image_id": 7, "category_id": 1, "score": 1}, "has no bbox, segmentation or keypoints"),
    (dict(POLYGON, segmentation=[[1, 2, 3, 4, 5]]), "5 coordinates|odd"),
    (dict(KEYPOINTS, keypoints=[1, 2, 1]), "keypoints has 1 joints; category 1 names 2"),
    (dict(KEYPOINTS, keypoints=[1, 2, 10 ** 400, 3, 4, 1]), "is not a non-empty list of finite numbers"),
    (dict(POLYGON, segmentation={"size": [40, 30], "counts": "abc"}), r"\[width, height\]"),
    ([1, 2], "is a JSON list, expected an object"),
])
def test_bad_detection_names_file_record_and_problem(record, message):
    with pytest.raises(BadRecordError, match=message) as err:
        flat([record])
    assert str(err.value).startswith("dets.json: detection #0")


def test_skip_puts_bad_detections_in_rejects_and_keeps_the_rest():
    out = flat([BOX, dict(BOX, image_id=8), POLYGON, dict(POLYGON, segmentation=[[1, 2, 3, 4, 5]])], "skip")
    rows = out.tables["predictions"].to_pylist()
    assert [r["id"] for r in rows] == [1, 3]
    assert [r["record_index"] for r in out.rejects] == [1, 3]
    assert "image_id 8" in out.rejects[0]["reason"] and out.rejects[0]["section"] == "detection"
    assert json.loads(out.rejects[1]["raw"])["segmentation"] == [[1, 2, 3, 4, 5]]


# ---------------------------------------------------------------------------- runs in the warehouse


@pytest.fixture()
def warehouse(mini_warehouse, tmp_path):
    root, dataset = mini_warehouse
    shutil.copytree(f"{root}/{dataset}", tmp_path / dataset)
    return str(tmp_path), dataset


def _val_detections(coco_mini, n=50):
    gt = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    anns = [a for a in gt["annotations"] if not a["iscrowd"]][:n]
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "segmentation": a["segmentation"], "score": 1 - i / n} for i, a in enumerate(anns)]


def test_run_is_partitioned_by_run_and_masks_equal_loadres(coco_mini, warehouse, tmp_path):
    root, dataset = warehouse
    dets = _val_detections(coco_mini)
    path = tmp_path / "dets_val.json"
    path.write_text(json.dumps(dets))
    report = results.run_ingest_results(str(path), run="m1", warehouse=root, dataset=dataset)
    assert (report.split, report.detections, report.rejects) == ("val2017", 50, 0)
    wh = Warehouse(root, dataset)
    m = wh.require_manifest()
    assert m.runs() == ["m1"] and m.splits() == ["train2017", "val2017"]
    part = [p for p in m.parts if p.table == "predictions"]
    assert [(p.split, p.source_file, p.path) for p in part] == [
        ("m1", "dets_val.json", "predictions/run=m1/part-00000.parquet")]
    rows = wh.read_table("predictions", "m1").to_pylist()
    gt = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    res = gt.loadRes(copy.deepcopy(dets))
    for row in rows:
        ann = res.anns[row["id"]]
        assert row["run"] == "m1" and row["image_id"] == ann["image_id"]
        assert row["rle_counts"] == gt.annToRLE(ann)["counts"].decode()
        assert row["area"] == ann["area"] and row["bbox"] == ann["bbox"]
    con = connect(root, dataset)
    assert con.execute("SELECT count(*), any_value(run) FROM predictions WHERE category_name IS NOT NULL"
                       ).fetchone() == (50, "m1")


def test_reingesting_a_run_replaces_it_and_skip_writes_rejects(coco_mini, warehouse, tmp_path):
    root, dataset = warehouse
    dets = _val_detections(coco_mini, 20)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(dets))
    b.write_text(json.dumps(dets[:5] + [dict(dets[0], image_id=-1)]))
    results.run_ingest_results(str(a), run="m1", warehouse=root, dataset=dataset)
    with pytest.raises(BadRecordError, match="b.json: detection #5: image_id -1 is not an image of split val2017"):
        results.run_ingest_results(str(b), run="m1", warehouse=root, dataset=dataset, split="val2017")
    report = results.run_ingest_results(str(b), run="m1", warehouse=root, dataset=dataset, on_bad_record="skip")
    assert (report.detections, report.rejects) == (5, 1)
    con = connect(root, dataset)
    assert con.execute("SELECT count(*), min(source_file) FROM raw_predictions").fetchone() == (5, "b.json")
    assert con.execute("SELECT split, kind, reason FROM rejects WHERE source_file = 'b.json'").fetchall() == [
        ("m1", "results", "image_id -1 is not an image of split val2017")]


def test_run_names_and_splits_are_checked(coco_mini, warehouse, tmp_path):
    root, dataset = warehouse
    path = tmp_path / "d.json"
    path.write_text(json.dumps(_val_detections(coco_mini, 3)))
    with pytest.raises(CocolakeError, match="run name 'val2017' is a split of the ground truth"):
        results.run_ingest_results(str(path), run="val2017", warehouse=root, dataset=dataset)
    with pytest.raises(CocolakeError, match="run name 'a/b'"):
        results.run_ingest_results(str(path), run="a/b", warehouse=root, dataset=dataset)
    with pytest.raises(CocolakeError, match="split 'test2017' is not in the warehouse"):
        results.run_ingest_results(str(path), run="r", warehouse=root, dataset=dataset, split="test2017")
    assert Warehouse(root, dataset).require_manifest().runs() == []


def test_results_and_matches_fail_at_once_while_another_run_writes(coco_mini, warehouse, tmp_path):
    root, dataset = warehouse
    path = tmp_path / "d.json"
    path.write_text(json.dumps(_val_detections(coco_mini, 3)))
    wh = Warehouse(root, dataset)
    before = wh.require_manifest().version
    with wh.writer_lock():  # as an ingest in another process holds it
        with pytest.raises(WarehouseError, match="another run is writing this dataset"):
            results.run_ingest_results(str(path), run="m1", warehouse=root, dataset=dataset)
    assert wh.require_manifest().version == before
    results.run_ingest_results(str(path), run="m1", warehouse=root, dataset=dataset)
    con = connect(root, dataset)
    result = evaluate.evaluate(con, "m1", iou_type="bbox")
    with wh.writer_lock():
        with pytest.raises(WarehouseError, match="another run is writing this dataset"):
            store.save_matches(root, dataset, result)
    assert store.save_matches(root, dataset, result) > 0


def test_a_file_that_is_no_results_list_is_refused_before_anything_is_written(coco_mini, warehouse, tmp_path):
    root, dataset = warehouse
    gt = coco_mini / "annotations" / "instances_val2017.json"
    before = Warehouse(root, dataset).require_manifest().version
    with pytest.raises(BadFileError, match=r"^instances_val2017.json: the top level is an object \(a ground-truth "
                       r"file\?\); a results file is a JSON list of detections"):
        results.run_ingest_results(str(gt), run="m1", warehouse=root, dataset=dataset)
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(_val_detections(coco_mini, 3))[:-30])
    with pytest.raises(BadFileError, match=r"^cut.json: the file ends at byte \d+ inside an unfinished value"):
        results.run_ingest_results(str(cut), run="m1", warehouse=root, dataset=dataset)
    assert Warehouse(root, dataset).require_manifest().version == before
    assert not (tmp_path / dataset / "predictions").exists()


@pytest.mark.parametrize("text", ["[]", " [\n ] "])
def test_an_empty_results_list_is_a_run_without_detections(warehouse, tmp_path, text):
    root, dataset = warehouse
    path = tmp_path / "empty.json"
    path.write_text(text)
    report = results.run_ingest_results(str(path), run="m0", warehouse=root, dataset=dataset, split="val2017")
    assert (report.detections, report.rejects) == (0, 0)
    manifest = Warehouse(root, dataset).require_manifest()
    assert manifest.files("predictions") == [] and not (tmp_path / dataset / "predictions").exists()


def test_cli_ingest_results(coco_mini, warehouse, tmp_path, capsys):
    root, dataset = warehouse
    path = tmp_path / "d.json"
    path.write_text(json.dumps(_val_detections(coco_mini, 4) + [{"image_id": 0}]))
    argv = ["ingest-results", "--run", "cli", str(path), "--warehouse", root, "--dataset", dataset, "--no-progress"]
    assert main(argv) == 1
    assert "detection #4" in capsys.readouterr().err
    assert main(argv + ["--on-bad-record", "skip"]) == 0
    out = capsys.readouterr().out
    assert "run cli: 4 detections from d.json on split val2017" in out and "1 bad records skipped" in out
    table = Warehouse(root, dataset).read_table("predictions")
    assert table.num_rows == 4 and isinstance(table, pa.Table)


def test_a_failed_garbage_collection_after_the_commit_is_a_warning(coco_mini, warehouse, tmp_path, caplog):
    from tests.test_warehouse import block_the_trash

    root, dataset = warehouse
    path = tmp_path / "d.json"
    path.write_text(json.dumps(_val_detections(coco_mini, 3)))
    results.run_ingest_results(str(path), run="m1", warehouse=root, dataset=dataset)
    block_the_trash(tmp_path / dataset)
    with caplog.at_level("WARNING"):
        report = results.run_ingest_results(str(path), run="m1", warehouse=root, dataset=dataset)
    assert f"version {report.version} committed, but removing old parts failed" in caplog.text
    assert Warehouse(root, dataset).read_table("predictions", "m1").num_rows == 3
    result = evaluate.evaluate(connect(root, dataset), "m1", iou_type="bbox")
    store.save_matches(root, dataset, result)
    block_the_trash(tmp_path / dataset)
    caplog.clear()
    with caplog.at_level("WARNING"):
        rows = store.save_matches(root, dataset, result)  # replaces the match table of the first
    version = Warehouse(root, dataset).require_manifest().version
    assert rows > 0 and f"version {version} committed, but removing old parts failed" in caplog.text
    assert Warehouse(root, dataset).read_table("prediction_matches", "m1").num_rows == rows

"""Checks of sql/checks return the offending rows of crafted bad data and nothing on
coco-mini; analysis queries of sql/queries run and give the expected shape."""

from __future__ import annotations

import collections

import pyarrow as pa
import pytest

from pipeline.query import checks
from pipeline.errors import QueryError
from pipeline.schema import schema_for
from pipeline.query.views import connect
from pipeline.warehouse import Part, Warehouse, write_part

IMAGE = {"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}
CATEGORY = {"id": 1, "name": "cat", "supercategory": "animal"}
# a valid 10 x 10 square annotation
GOOD = {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": [10.0, 10.0, 10.0, 10.0],
        "mask_area": 100, "polygons": [[10.0, 10.0, 20.0, 10.0, 20.0, 20.0, 10.0, 20.0]]}
DEFAULTS = {"source_file": "instances_train2017.json", "kind": "instances", "segmentation_format": "polygon"}


def warehouse_with(root, tables: dict[str, list[dict]]) -> tuple[str, str]:
    """A committed warehouse holding exactly these rows (split train2017 unless a row says);
    rows the ingest would refuse can be written this way."""
    wh = Warehouse(str(root), "crafted")
    parts, number = [], collections.Counter()
    for table, rows in tables.items():
        schema = schema_for(table)
        groups = collections.defaultdict(list)
        for i, row in enumerate(rows):
            row = {"record_index": i, **DEFAULTS, **row}
            groups[(row.pop("split", "train2017"), row["source_file"])].append(row)
        for (split, source), group in groups.items():
            rel = Warehouse.part_rel(table, split, number[split])
            number[split] += 1
            write_part(wh.fs, f"{wh.root}/{rel}", [pa.Table.from_pylist(group, schema=schema)], schema)
            parts.append(Part(table, split, source, rel, len(group)))
    wh.commit(parts, set(), [])
    return str(root), "crafted"


def found(root, tables, name) -> list[dict]:
    base = {"images": [IMAGE], "categories": [CATEGORY], "annotations": [GOOD]}
    con = connect(*warehouse_with(root, {**base, **tables}))
    try:
        (result,) = checks.run_checks(con, [name])
    finally:
        con.close()
    return result.rows.to_pylist()


def test_clean_data_passes_every_check(tmp_path):
    con = connect(*warehouse_with(tmp_path, {"images": [IMAGE], "categories": [CATEGORY], "annotations": [GOOD]}))
    results = checks.run_checks(con)
    assert {r.name for r in results} == set(checks.checks())
    assert [r.name for r in results if not r.passed] == []


def test_coco_mini_passes_every_check(mini_warehouse):
    con = connect(*mini_warehouse, restrict=True)
    results = checks.run_checks(con)
    assert len(results) >= 10
    assert {r.name: r.rows.num_rows for r in results if not r.passed} == {}


def test_dangling_image_id(tmp_path):
    rows = found(tmp_path, {
        "annotations": [GOOD, {**GOOD, "id": 11, "image_id": 99}],
        "captions": [{"id": 5, "image_id": 98, "caption": "x", "source_file": "captions_train2017.json",
                      "kind": "captions"}],
        "keypoints": [{"annotation_id": 11, "image_id": 99, "num_keypoints": 0, "keypoints": [0.0, 0, 0],
                       "source_file": "person_keypoints_train2017.json", "kind": "person_keypoints"}],
    }, "dangling_image_id")
    assert [(r["table_name"], r["record_id"], r["image_id"]) for r in rows] == [
        ("annotations", "11", "99"), ("captions", "5", "98"), ("keypoints", "11", "99")]


def test_dangling_category_id(tmp_path):
    rows = found(tmp_path, {"annotations": [GOOD, {**GOOD, "id": 11, "category_id": 7}]}, "dangling_category_id")
    assert [(r["annotation_id"], r["category_id"]) for r in rows] == [(11, 7)]


def test_bbox_outside_image(tmp_path):
    rows = found(tmp_path, {"annotations": [
        GOOD,
        {**GOOD, "id": 11, "bbox": [90.0, 10.0, 30.0, 10.0]},  # 20 px past the right edge
        {**GOOD, "id": 12, "bbox": [-3.0, 0.0, 5.0, 5.0]},  # starts left of the image
        {**GOOD, "id": 13, "bbox": [0.0, 0.0, 100.5, 50.5]},  # within the 1 px slack
    ]}, "bbox_outside_image")
    assert [(r["annotation_id"], r["width"], r["height"]) for r in rows] == [(11, 100, 50), (12, 100, 50)]


def test_degenerate_bbox(tmp_path):
    rows = found(tmp_path, {"annotations": [
        GOOD,
        {**GOOD, "id": 11, "bbox": [10.0, 10.0, 0.0, 5.0]},
        {**GOOD, "id": 12, "bbox": None},
        {**GOOD, "id": 13, "bbox": [1.0, 2.0, 3.0]},
        {**GOOD, "id": 14, "bbox": [1.0, 2.0, float("nan"), 4.0]},
    ]}, "degenerate_bbox")
    assert [(r["annotation_id"], r["problem"]) for r in rows] == [
        (11, "bbox width or height <= 0"),
        (12, "no bbox"),
        (13, "bbox has 3 numbers; expected [x, y, w, h]"),
        (14, "bbox has a value that is not a finite number"),
    ]


def test_area_mismatch(tmp_path):
    rows = found(tmp_path, {"annotations": [
        GOOD,
        {**GOOD, "id": 11, "area": 5000.0},  # far off
        {**GOOD, "id": 12, "area": 125.0},  # 20%: polygon vs pixels, tolerated
        {**GOOD, "id": 13, "area": 10.0, "mask_area": 0},  # 10 px: tolerated
        {**GOOD, "id": 14, "area": 0.0, "mask_area": 400},  # nothing stored, a mask there
    ]}, "area_mismatch")
    assert [(r["annotation_id"], r["area"], r["mask_area"], r["relative_difference"]) for r in rows] == [
        (11, 5000.0, 100, 0.98), (14, 0.0, 400, 1.0)]


def test_duplicate_ids(tmp_path):
    rows = found(tmp_path, {
        "annotations": [GOOD, {**GOOD, "source_file": "stuff_train2017.json", "kind": "stuff"}],
        "images": [IMAGE, {**IMAGE, "file_name": "b.jpg"}],
        "categories": [CATEGORY, {**CATEGORY, "id": 2}],
    }, "duplicate_ids")
    assert [(r["table_name"], r["id"], r["copies"], r["source_files"]) for r in rows] == [
        ("annotations", "10", 2, ["instances_train2017.json", "stuff_train2017.json"]),
        ("images", "1", 2, ["instances_train2017.json"]),
    ]


def test_duplicate_ids_ignore_keypoint_copies(tmp_path):
    """A person-keypoints file repeats the instances annotation: one annotation, not two."""
    rows = found(tmp_path, {"annotations": [
        GOOD, {**GOOD, "source_file": "person_keypoints_train2017.json", "kind": "person_keypoints"}]},
        "duplicate_ids")
    assert rows == []


def test_polygon_outside_image(tmp_path):
    rows = found(tmp_path, {"annotations": [
        GOOD,
        {**GOOD, "id": 11, "mask_area": 0, "polygons": [[200.0, 10, 220, 10, 220, 20], [-30.0, 0, -10, 0, -10, 9]]},
        {**GOOD, "id": 12, "polygons": [[90.0, 10, 120, 10, 120, 20]]},  # partly inside
        {**GOOD, "id": 13, "polygons": [[200.0, 10, 220, 10, 220, 20], [10.0, 10, 20, 10, 20, 20]]},  # one inside
    ]}, "polygon_outside_image")
    assert [(r["annotation_id"], r["polygon_count"], r["mask_area"]) for r in rows] == [(11, 2, 0)]


def test_keypoint_count_mismatch(tmp_path):
    person = {**CATEGORY, "id": 3, "name": "person", "keypoints": ["nose", "eye"], "skeleton": [[1, 2]],
              "source_file": "person_keypoints_train2017.json", "kind": "person_keypoints"}
    kp_file = {"source_file": "person_keypoints_train2017.json", "kind": "person_keypoints"}
    rows = found(tmp_path, {
        "categories": [CATEGORY, person],
        "annotations": [GOOD] + [{**GOOD, **kp_file, "id": i, "category_id": 3} for i in (20, 21, 22)],
        "keypoints": [
            {**kp_file, "annotation_id": 20, "image_id": 1, "num_keypoints": 1, "keypoints": [1.0, 1, 2, 0, 0, 0]},
            {**kp_file, "annotation_id": 21, "image_id": 1, "num_keypoints": 2, "keypoints": [1.0, 1, 2, 0, 0, 0]},
            {**kp_file, "annotation_id": 22, "image_id": 1, "num_keypoints": 1, "keypoints": [1.0, 1, 2]},
        ],
    }, "keypoint_count_mismatch")
    assert [(r["annotation_id"], r["num_keypoints"], r["labeled_joints"], r["keypoint_values"],
             r["category_joints"]) for r in rows] == [(21, 2, 1, 6, 2), (22, 1, 1, 3, 2)]


def test_image_conflicts(tmp_path):
    rows = found(tmp_path, {"images": [
        IMAGE, {**IMAGE, "height": 60, "source_file": "captions_train2017.json", "kind": "captions"}]},
        "image_conflicts")
    assert [(r["image_id"], r["heights"], r["source_files"]) for r in rows] == [
        ("1", [50, 60], ["captions_train2017.json", "instances_train2017.json"])]


def test_rejected_records(tmp_path):
    rows = found(tmp_path, {"rejects": [{"section": "annotations", "record_id": "7", "reason": "bbox is bad",
                                         "raw": "{}"}]}, "rejected_records")
    assert [(r["section"], r["record_id"], r["reason"]) for r in rows] == [("annotations", "7", "bbox is bad")]


def test_unknown_check_is_named(tmp_path):
    con = connect(*warehouse_with(tmp_path, {"images": [IMAGE]}))
    with pytest.raises(QueryError, match="no check named nope; checks are: area_mismatch"):
        checks.run_checks(con, ["nope"])


def test_checks_and_queries_have_descriptions():
    for f in list(checks.checks().values()) + list(checks.queries().values()):
        assert "one row" in checks.description(f).lower(), f.name


# ------------------------------------------------------------------ analysis queries
EXPECTED_QUERIES = {
    "class_balance", "boxes_per_image", "tiny_object_share", "crowd_share", "keypoint_visibility",
    "caption_length", "images_without_annotations", "category_cooccurrence",
}


def test_queries_run_on_coco_mini(mini_warehouse, coco_mini):
    from pycocotools.coco import COCO

    assert EXPECTED_QUERIES <= set(checks.queries())
    con = connect(*mini_warehouse, restrict=True)
    out = {name: checks.run_query(con, name).to_pylist() for name in sorted(EXPECTED_QUERIES)}
    coco = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))

    balance = {r["category_id"]: r["annotations"] for r in out["class_balance"] if r["split"] == "val2017"}
    assert balance == {c: len(coco.getAnnIds(catIds=[c])) for c in coco.getCatIds()}
    per_image = collections.Counter(len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds())
    assert {r["boxes"]: r["images"] for r in out["boxes_per_image"] if r["split"] == "val2017"} == per_image
    crowd = collections.Counter(coco.cats[a["category_id"]]["name"] for a in coco.dataset["annotations"]
                                if a["iscrowd"])
    assert {r["category_name"]: r["crowd"] for r in out["crowd_share"] if r["split"] == "val2017"} == crowd
    tiny = collections.Counter(coco.cats[a["category_id"]]["name"] for a in coco.dataset["annotations"]
                               if a["area"] < 256)
    assert {r["category_name"]: r["tiny"] for r in out["tiny_object_share"]
            if r["split"] == "val2017" and r["tiny"]} == tiny
    assert out["images_without_annotations"] == []  # every coco-mini image has annotations
    pairs = collections.Counter()
    for i in coco.getImgIds():
        names = sorted({a["category_id"] for a in coco.imgToAnns[i]})
        pairs.update((coco.cats[x]["name"], coco.cats[y]["name"]) for x in names for y in names if x < y)
    assert {(r["category_a"], r["category_b"]): r["images"] for r in out["category_cooccurrence"]
            if r["split"] == "val2017"} == pairs

    kp = COCO(str(coco_mini / "annotations" / "person_keypoints_val2017.json"))
    visible = [sum(a["keypoints"][3 * j + 2] == 2 for a in kp.dataset["annotations"]) for j in range(17)]
    assert [r["visible"] for r in out["keypoint_visibility"] if r["split"] == "val2017"] == visible
    assert [r["joint_name"] for r in out["keypoint_visibility"] if r["split"] == "val2017"] == \
        kp.cats[1]["keypoints"]
    lengths = sum(r["captions"] for r in out["caption_length"] if r["split"] == "val2017")
    assert lengths == 395


def test_unknown_query_is_named(mini_warehouse):
    con = connect(*mini_warehouse)
    with pytest.raises(QueryError, match="no query named 'nope'; queries are: .*class_balance"):
        checks.run_query(con, "nope")

"""pipeline/export/coco.py and select.py: COCO JSON export of subsets, exact round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline.errors import ConfigError, QueryError
from pipeline.export import ExportError, export
from pipeline.ingest.run import run_ingest

SOURCE_FILES = [
    f"{kind}_{split}.json"
    for kind in ("instances", "person_keypoints", "captions")
    for split in ("train2017", "val2017")
]


def _crowd_rle() -> dict:
    m = np.zeros((8, 10), dtype=np.uint8)
    m[2:6, 3:9] = 1
    m[4, 5] = 0
    runs, last, n = [], 0, 0
    for v in m.ravel(order="F"):
        if v != last:
            runs.append(n)
            last, n = v, 0
        n += 1
    runs.append(n)
    return {"counts": runs, "size": [8, 10]}


def _compressed_rle() -> dict:
    m = np.zeros((8, 10), dtype=np.uint8, order="F")
    m[1:4, 1:7] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [8, 10], "counts": rle["counts"].decode("ascii")}


# a file with everything the typed columns do not hold on their own: unknown top-level and
# record keys, a null license, a float height, `segmentation: []`, a bool iscrowd, both RLE
# forms, an annotation without segmentation and an image without annotations
TINY = {
    "info": {"description": "tiny", "year": 2024},
    "type": "instances",
    "licenses": [{"url": "http://example.org/l", "id": 1, "name": "L", "note": "kept"}],
    "custom_meta": {"made_by": "hand", "list": [1, 2.5, None]},
    "images": [
        {"id": 1, "file_name": "a.jpg", "height": 8, "width": 10, "license": 1, "vendor": {"k": [1, 2]}},
        {"id": 2, "file_name": "b.jpg", "height": 8, "width": 10, "license": None},
        {"id": 3, "file_name": "c.jpg", "height": 8.0, "width": 10},
        {"id": 4, "file_name": "d.jpg", "height": 8, "width": 10},
    ],
    "annotations": [
        {"segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]], "area": 16.0, "iscrowd": 0,
         "image_id": 1, "bbox": [1.0, 1.0, 4.0, 4.0], "category_id": 7, "id": 10, "score": 0.5,
         "attributes": {"occluded": True}},
        {"segmentation": [], "area": 0.0, "iscrowd": 0, "image_id": 1, "bbox": [0.0, 0.0, 1.0, 1.0],
         "category_id": 7, "id": 11},
        {"segmentation": _crowd_rle(), "area": 23.0, "iscrowd": 1, "image_id": 2,
         "bbox": [3.0, 2.0, 6.0, 4.0], "category_id": 7, "id": 12},
        {"segmentation": _compressed_rle(), "area": 18.0, "iscrowd": 0, "image_id": 2,
         "bbox": [1.0, 1.0, 6.0, 3.0], "category_id": 8, "id": 13},
        {"area": 2.0, "iscrowd": True, "image_id": 3, "bbox": [0.0, 0.0, 2.0, 1.0], "category_id": 8, "id": 14},
    ],
    "categories": [
        {"supercategory": "s", "id": 7, "name": "seven", "color": [1, 2, 3]},
        {"supercategory": "s", "id": 8, "name": "eight"},
    ],
}


@pytest.fixture(scope="module")
def tiny_warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    src = root / "instances_tiny.json"
    src.write_text(json.dumps(TINY))
    run_ingest([str(src)], warehouse=str(root / "wh"), dataset="tiny", split="tiny", workers=1)
    return str(root / "wh"), "tiny", src


@pytest.fixture(scope="module")
def full_export(mini_warehouse, tmp_path_factory):
    wh, ds = mini_warehouse
    out = tmp_path_factory.mktemp("full")
    report = export(out, warehouse=wh, dataset=ds, images="none")
    return out, report


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("name", SOURCE_FILES)
def test_export_of_everything_gives_back_each_source_file(full_export, coco_mini, name):
    out, _ = full_export
    original = _load(coco_mini / "annotations" / name)
    exported = _load(out / "annotations" / name)
    assert list(exported) == list(original)
    for key in original:
        assert exported[key] == original[key], key
    assert exported == original


def _typed(value):
    """``value`` with each number tagged int or float: json.load-equal is blind to 104752 vs 104752.0."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if type(value) in (int, float):
        return (type(value).__name__, value)
    return value


@pytest.mark.parametrize("name", SOURCE_FILES)
def test_export_of_everything_gives_back_each_number_as_the_int_or_float_it_was(full_export, coco_mini, name):
    out, _ = full_export
    original = _load(coco_mini / "annotations" / name)
    exported = _load(out / "annotations" / name)

    def areas(doc):
        return [(a["id"], type(a["area"]).__name__, a["area"]) for a in doc["annotations"] if "area" in a]

    if not name.startswith("captions"):
        # the crowd annotations' areas are ints, the others floats (e.g. "area": 104752 and 702.1057499999998)
        assert {t for _, t, _ in areas(original)} == {"int", "float"}
    assert areas(exported) == areas(original)
    assert _typed(exported) == _typed(original)


def test_export_of_everything_writes_only_the_source_files(full_export):
    out, report = full_export
    assert sorted(p.name for p in (out / "annotations").iterdir()) == sorted(SOURCE_FILES)
    assert report.files["annotations/instances_val2017.json"]["annotations"] == 624


def test_round_trip_keeps_extra_fields_raw_values_and_every_segmentation_form(tiny_warehouse, tmp_path):
    wh, ds, src = tiny_warehouse
    export(tmp_path, warehouse=wh, dataset=ds, images="none")
    exported = _load(tmp_path / "annotations" / "instances_tiny.json")
    assert list(exported) == list(TINY)
    assert exported == TINY
    by_id = {a["id"]: a for a in exported["annotations"]}
    assert by_id[12]["segmentation"]["counts"] == TINY["annotations"][2]["segmentation"]["counts"]
    assert by_id[13]["segmentation"]["counts"] == TINY["annotations"][3]["segmentation"]["counts"]
    assert by_id[11]["segmentation"] == []
    assert "segmentation" not in by_id[14] and by_id[14]["iscrowd"] is True
    assert exported["images"][2]["height"] == 8.0 and exported["images"][1]["license"] is None


def test_rows_read_through_arrow_write_the_same_bytes(full_export, tiny_warehouse, mini_warehouse, tmp_path,
                                                      monkeypatch):
    # a small section is read as DuckDB's Python values, a large one through Arrow: both
    # must write the same files (here every section takes the Arrow path)
    from pipeline.export import coco

    monkeypatch.setattr(coco, "PLAIN_ROWS", 0)
    out, _ = full_export
    wh, ds = mini_warehouse
    export(tmp_path / "mini", warehouse=wh, dataset=ds, images="none")
    for name in SOURCE_FILES:
        assert (tmp_path / "mini" / "annotations" / name).read_bytes() == (out / "annotations" / name).read_bytes()
    wh, ds, src = tiny_warehouse
    export(tmp_path / "tiny", warehouse=wh, dataset=ds, images="none")
    monkeypatch.setattr(coco, "PLAIN_ROWS", 10**9)
    export(tmp_path / "tiny-plain", warehouse=wh, dataset=ds, images="none")
    name = "annotations/instances_tiny.json"
    assert (tmp_path / "tiny" / name).read_bytes() == (tmp_path / "tiny-plain" / name).read_bytes()
    assert _load(tmp_path / "tiny" / name) == TINY


def test_pycocotools_masks_of_the_export_equal_the_originals(full_export, coco_mini):
    out, _ = full_export
    checked = 0
    for name in ("instances_train2017.json", "instances_val2017.json", "person_keypoints_val2017.json"):
        ours, theirs = COCO(str(out / "annotations" / name)), COCO(str(coco_mini / "annotations" / name))
        assert sorted(ours.anns) == sorted(theirs.anns)
        for ann_id, ann in theirs.anns.items():
            np.testing.assert_array_equal(ours.annToMask(ours.anns[ann_id]), theirs.annToMask(ann))
            checked += 1
    assert checked == 739 + 624 + 118


# ---------------------------------------------------------------------------- subsets


@pytest.mark.parametrize(
    "names, area_rng, iscrowd",
    [(["giraffe"], None, None), (["person"], (32 ** 2, 96 ** 2), 0), (["dog", "cat", "person"], None, 1)],
)
def test_category_subset_equals_what_pycocotools_selects(mini_warehouse, coco_mini, tmp_path, names, area_rng,
                                                         iscrowd):
    wh, ds = mini_warehouse
    quoted = ", ".join(f"'{n}'" for n in names)
    where = f"category_name IN ({quoted})"
    if area_rng:
        where += f" AND area > {area_rng[0]} AND area < {area_rng[1]}"
    if iscrowd is not None:
        where += f" AND iscrowd = {iscrowd}"
    export(tmp_path, warehouse=wh, dataset=ds, where=where, images="none")
    seen_any = False
    for split in ("train2017", "val2017"):
        coco = COCO(str(coco_mini / "annotations" / f"instances_{split}.json"))
        cat_ids = coco.getCatIds(catNms=names)
        kwargs = {"catIds": cat_ids}
        if area_rng:
            kwargs["areaRng"] = list(area_rng)
        if iscrowd is not None:
            kwargs["iscrowd"] = bool(iscrowd)
        want_ids = coco.getAnnIds(**kwargs)
        path = tmp_path / "annotations" / f"instances_{split}.json"
        if not want_ids:
            assert not path.exists()
            continue
        seen_any = True
        got = _load(path)
        assert [a["id"] for a in got["annotations"]] == want_ids  # the source order
        assert got["annotations"] == coco.loadAnns(want_ids)
        want_images = {coco.anns[i]["image_id"] for i in want_ids}
        assert [i["id"] for i in got["images"]] == [i["id"] for i in coco.dataset["images"]
                                                     if i["id"] in want_images]
        assert got["categories"] == coco.dataset["categories"]
        COCO(str(path))  # loads
    assert seen_any
    # the keypoint file of a split is written only when the subset holds persons
    has_kp = any((tmp_path / "annotations" / f"person_keypoints_{s}.json").exists() for s in ("train2017", "val2017"))
    assert has_kp == ("person" in names)
    assert not list((tmp_path / "annotations").glob("captions_*.json"))


def test_person_subset_carries_the_keypoints_file(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path, warehouse=wh, dataset=ds, where="category_name = 'person' AND area_bucket = 'large'",
           images="none", splits=["val2017"])
    got = _load(tmp_path / "annotations" / "person_keypoints_val2017.json")
    kp = COCO(str(coco_mini / "annotations" / "person_keypoints_val2017.json"))
    want = kp.getAnnIds(areaRng=[96 ** 2, 1e10])
    assert [a["id"] for a in got["annotations"]] == want
    assert got["annotations"] == kp.loadAnns(want)
    assert not (tmp_path / "annotations" / "instances_train2017.json").exists()


def test_keep_all_keeps_every_annotation_and_caption_of_the_images(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path, warehouse=wh, dataset=ds, where="category_name = 'giraffe' -- tall ones", keep="all",
           images="none")
    for split in ("train2017", "val2017"):
        inst = COCO(str(coco_mini / "annotations" / f"instances_{split}.json"))
        img_ids = sorted({inst.anns[i]["image_id"] for i in inst.getAnnIds(catIds=inst.getCatIds(catNms=["giraffe"]))})
        got = _load(tmp_path / "annotations" / f"instances_{split}.json")
        assert sorted(a["id"] for a in got["annotations"]) == sorted(inst.getAnnIds(imgIds=img_ids))
        caps = COCO(str(coco_mini / "annotations" / f"captions_{split}.json"))
        got_caps = _load(tmp_path / "annotations" / f"captions_{split}.json")
        assert sorted(a["id"] for a in got_caps["annotations"]) == sorted(caps.getAnnIds(imgIds=img_ids))
        assert sorted(i["id"] for i in got_caps["images"]) == img_ids


def test_sql_selecting_images_keeps_images_without_annotations(tiny_warehouse, tmp_path):
    wh, ds, _ = tiny_warehouse
    export(tmp_path, warehouse=wh, dataset=ds, sql="SELECT id AS image_id FROM images WHERE id IN (2, 4);",
           images="none")
    got = _load(tmp_path / "annotations" / "instances_tiny.json")
    assert [i["id"] for i in got["images"]] == [2, 4]
    assert [a["id"] for a in got["annotations"]] == [12, 13]
    assert got["custom_meta"] == TINY["custom_meta"]


def test_sql_selecting_annotation_ids(tiny_warehouse, tmp_path):
    wh, ds, _ = tiny_warehouse
    export(tmp_path, warehouse=wh, dataset=ds, sql="SELECT 13 AS annotation_id", images="none")
    got = _load(tmp_path / "annotations" / "instances_tiny.json")
    assert [a["id"] for a in got["annotations"]] == [13]
    assert [i["id"] for i in got["images"]] == [2]


def test_split_ratio_is_deterministic_and_partitions_the_images(mini_warehouse, tmp_path):
    wh, ds = mini_warehouse
    runs = []
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / run
        export(out, warehouse=wh, dataset=ds, split_ratio=0.75, seed=seed, images="none")
        train = _load(out / "annotations" / "instances_train.json")
        val = _load(out / "annotations" / "instances_val.json")
        runs.append((train, val))
        train_ids = {i["id"] for i in train["images"]}
        val_ids = {i["id"] for i in val["images"]}
        assert not train_ids & val_ids
        assert len(train_ids | val_ids) == 159
        assert 0.6 < len(train_ids) / 159 < 0.9
        assert {a["image_id"] for a in train["annotations"]} <= train_ids
        assert len(train["annotations"]) + len(val["annotations"]) == 739 + 624
        assert len(train["categories"]) == 80 and len(train["licenses"]) == 8
        COCO(str(out / "annotations" / "instances_train.json"))
    assert runs[0] == runs[1]
    assert {i["id"] for i in runs[0][0]["images"]} != {i["id"] for i in runs[2][0]["images"]}


def test_split_option_limits_the_export(mini_warehouse, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path, warehouse=wh, dataset=ds, splits=["val2017"], images="none")
    assert sorted(p.name for p in (tmp_path / "annotations").iterdir()) == [
        "captions_val2017.json", "instances_val2017.json", "person_keypoints_val2017.json"]
    with pytest.raises(ConfigError, match="split: test2017 not in dataset 'mini'"):
        export(tmp_path / "other", warehouse=wh, dataset=ds, splits=["test2017"], images="none")


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "where, message",
    [
        ("category_name = = 'giraffe'", "syntax error"),
        ("no_such_column = 1", "no_such_column"),
        ("1=1); COPY (SELECT 1) TO 'leak.csv'; SELECT (1", "single SELECT expression"),
    ],
)
def test_malformed_predicate_is_a_one_line_error_that_shows_it(mini_warehouse, tmp_path, monkeypatch, where,
                                                               message):
    wh, ds = mini_warehouse
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QueryError) as info:
        export(tmp_path / "out", warehouse=wh, dataset=ds, where=where, images="none")
    text = str(info.value)
    assert "\n" not in text
    assert where in text and message in text
    assert not (tmp_path / "leak.csv").exists()
    assert not (tmp_path / "out" / "annotations").exists()


def test_sql_must_be_one_select_on_a_read_only_connection(mini_warehouse, tmp_path):
    wh, ds = mini_warehouse
    with pytest.raises(QueryError, match="single SELECT"):
        export(tmp_path, warehouse=wh, dataset=ds, sql="CREATE TABLE x AS SELECT 1 AS image_id", images="none")
    with pytest.raises(QueryError, match="needs an annotation_id or image_id column"):
        export(tmp_path, warehouse=wh, dataset=ds, sql="SELECT 1 AS foo", images="none")


def test_a_predicate_matching_nothing_is_an_error(mini_warehouse, tmp_path):
    wh, ds = mini_warehouse
    with pytest.raises(ExportError, match="matches no annotation"):
        export(tmp_path, warehouse=wh, dataset=ds, where="category_name = 'unicorn'", images="none")


def test_where_and_sql_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="one selector"):
        export(tmp_path, where="true", sql="SELECT 1 AS image_id")


# ---------------------------------------------------------------------------- pruned fetch


@pytest.fixture(scope="module")
def small_groups(coco_mini, tmp_path_factory):
    """coco-mini's instances ingested in row groups of 32 rows: many groups per part."""
    root = tmp_path_factory.mktemp("small-groups")
    run_ingest([str(coco_mini / "annotations" / f"instances_{s}.json") for s in ("train2017", "val2017")],
               warehouse=str(root), dataset="mini", workers=1, row_group_rows=32)
    return str(root)


def _rarest_category(original: dict) -> tuple[int, str]:
    counts: dict[int, int] = {}
    for a in original["annotations"]:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    cid = min(counts, key=lambda c: (counts[c], c))
    return cid, next(c["name"] for c in original["categories"] if c["id"] == cid)


def _row_groups_scanned(plan: str) -> list[tuple[int, int]]:
    import re

    return [(int(a), int(b)) for a, b in re.findall(r"Row Groups Scanned: ([\d,]+) / ([\d,]+)", plan.replace(",", ""))]


def test_a_category_subset_reads_only_the_row_groups_of_its_category(small_groups, coco_mini):
    from pipeline.export import coco, select
    from pipeline.export.options import ExportOptions

    original = _load(coco_mini / "annotations" / "instances_train2017.json")
    cid, name = _rarest_category(original)
    opts = ExportOptions(out="unused", warehouse=small_groups, dataset="mini", where=f"category_name = '{name}'",
                         images="none")
    with select.open_readonly(opts) as con:
        sel = select.build_subset(con, opts)
        picked = con.execute("SELECT id FROM export_annotations WHERE split = 'train2017' ORDER BY id").fetchall()
        sql, params = coco.annotation_query(con, "instances", ["train2017", "train2017", "instances_train2017.json"])
        rows = con.execute(sql, params).fetchall()
        plan = con.execute("EXPLAIN ANALYZE " + sql, params).fetchall()[0][1]
    # the selection knows the category, so it also reads only that category's row groups
    assert sel.categories == [cid]
    assert [r[0] for r in picked] == sorted(a["id"] for a in original["annotations"] if a["category_id"] == cid)
    assert rows
    parquet_scans = [s for s in _row_groups_scanned(plan) if s[1] > 1]
    assert parquet_scans, plan
    scanned, total = parquet_scans[0]
    assert 1 <= scanned < total / 4, plan


def _parquet_projections(node) -> list[list[str]]:
    """The columns each Parquet scan of a JSON plan (``EXPLAIN (FORMAT json)``) reads."""
    if isinstance(node, list):
        return [p for n in node for p in _parquet_projections(n)]
    info = node.get("extra_info", {})
    own = [info.get("Projections", [])] if info.get("Function") == "READ_PARQUET" else []
    return own + _parquet_projections(node.get("children", []))


@pytest.mark.parametrize("fmt", ["yolo-detect", "yolo-segment", "parquet", "hf"])
def test_every_format_reads_only_the_row_groups_of_the_subsets_category(small_groups, coco_mini, fmt):
    from pipeline.export import hf, parquet, select, yolo
    from pipeline.export.options import ExportOptions

    _, name = _rarest_category(_load(coco_mini / "annotations" / "instances_train2017.json"))
    opts = ExportOptions(out="unused", warehouse=small_groups, dataset="mini", where=f"category_name = '{name}'",
                         images="none")
    with select.open_readonly(opts) as con:
        select.build_subset(con, opts)
        if fmt.startswith("yolo"):
            sql, params = yolo.annotation_query(con, fmt.split("-")[1])
        elif fmt == "parquet":
            sql, params = parquet._annotation_rows(con, ["train2017", "train2017", "instances_train2017.json"])
        else:
            sql, extra = hf.images_query(con)
            params = ["train2017", *extra]
        assert con.execute(sql, params).fetchall()
        plan = con.execute("EXPLAIN ANALYZE " + sql, params).fetchall()[0][1]
        con_plan = json.loads(con.execute("EXPLAIN (FORMAT json) " + sql, params).fetchall()[0][1])
    scans = [s for s in _row_groups_scanned(plan) if s[1] > 1]
    assert scans, plan
    assert all(scanned < total / 4 for scanned, total in scans if total > 8), plan
    read = {c for scan in _parquet_projections(con_plan) for c in scan}
    # YOLO boxes and the HF rows (RLE) never read the widest column, the polygons
    assert ("polygons" in read) == (fmt in ("yolo-segment", "parquet")), read


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_a_category_subset_of_small_row_groups_keeps_the_source_order(small_groups, coco_mini, tmp_path, split):
    original = _load(coco_mini / "annotations" / f"instances_{split}.json")
    cid, name = _rarest_category(original)
    out = tmp_path / "out"
    export(str(out), warehouse=small_groups, dataset="mini", where=f"category_name = '{name}'", images="none")
    got = _load(out / "annotations" / f"instances_{split}.json")
    want = [a for a in original["annotations"] if a["category_id"] == cid]
    assert got["annotations"] == want
    image_ids = {a["image_id"] for a in want}
    assert got["images"] == [i for i in original["images"] if i["id"] in image_ids]


def test_export_of_everything_from_small_row_groups_gives_back_each_source_file(small_groups, coco_mini, tmp_path):
    out = tmp_path / "out"
    export(str(out), warehouse=small_groups, dataset="mini", images="none")
    for split in ("train2017", "val2017"):
        name = f"instances_{split}.json"
        assert _load(out / "annotations" / name) == _load(coco_mini / "annotations" / name)


def test_a_keypoints_row_goes_with_its_instance_whatever_its_category_id(tmp_path):
    person = {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0, "bbox": [1, 1, 4, 4],
              "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]}
    images = [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 10}]
    instances = {"images": images, "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
                 "annotations": [person, {**person, "id": 14, "category_id": 1}]}
    # the keypoints file names the same person under another category id
    keypoints = {"images": images, "categories": [{"id": 9, "name": "walker", "supercategory": "person",
                                                   "keypoints": ["nose"], "skeleton": []}],
                 "annotations": [{**person, "category_id": 9, "num_keypoints": 1, "keypoints": [2, 2, 2]}]}
    src = tmp_path / "src"
    src.mkdir()
    (src / "instances_train2017.json").write_text(json.dumps(instances))
    (src / "person_keypoints_train2017.json").write_text(json.dumps(keypoints))
    run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)
    out = tmp_path / "out"
    export(str(out), warehouse=str(tmp_path / "wh"), dataset="d", where="id = 13", images="none")
    assert [a["id"] for a in _load(out / "annotations" / "instances_train2017.json")["annotations"]] == [13]
    got = _load(out / "annotations" / "person_keypoints_train2017.json")["annotations"]
    assert [(a["id"], a["category_id"]) for a in got] == [(13, 9)]

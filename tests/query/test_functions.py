"""Mask functions in SQL equal pycocotools (on every coco-mini annotation and on random
masks); keypoint and box macros on small inputs."""

from __future__ import annotations

import io
import json

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pycocotools import mask as cocomask

from pipeline.query import functions as sqlfuncs
from pipeline.errors import QueryError
from pipeline.query.views import connect, run_sql


@pytest.fixture(scope="module")
def mini(mini_warehouse):
    c = connect(*mini_warehouse)
    yield c
    c.close()


@pytest.fixture()
def con():
    c = duckdb.connect()
    sqlfuncs.register(c)
    yield c
    c.close()


def rle(counts: str, size) -> dict:
    return {"counts": counts.encode(), "size": list(size)}


def test_area_bbox_runs_equal_pycocotools(mini):
    got = mini.execute("""
        SELECT rle_counts, rle_size, rle_area(rle_counts, rle_size), rle_bbox(rle_counts, rle_size),
               rle_runs(rle_counts, rle_size), mask_area
        FROM annotations""").fetchall()
    assert len(got) == 1363
    counts = [rle(c, s) for c, s, *_ in got]
    # one call per mask: pycocotools' batch area overflows a uint8 count past 255 masks
    assert [r[2] for r in got] == [int(cocomask.area(r)) for r in counts]
    assert [r[2] for r in got] == [r[5] for r in got]
    assert [r[3] for r in got] == [cocomask.toBbox(r).tolist() for r in counts]
    for (c, s, *_, runs, _), r in zip(got, counts):
        # uncompressed runs: pycocotools' frPyObjects of them gives the same string back
        assert sum(runs) == s[0] * s[1]
        assert cocomask.frPyObjects({"counts": runs, "size": s}, *s)["counts"] == r["counts"]


def test_iou_equals_pycocotools(mini):
    """Every pair of annotations on the same image, plus pairs across images of other sizes."""
    got = mini.execute("""
        SELECT a.rle_counts, a.rle_size, b.rle_counts, b.rle_size, b.iscrowd,
               rle_iou(a.rle_counts, a.rle_size, b.rle_counts, b.rle_size, b.iscrowd),
               rle_iou(a.rle_counts, a.rle_size, b.rle_counts, b.rle_size)
        FROM annotations AS a
        JOIN annotations AS b ON a.split = b.split
         AND (a.image_id = b.image_id OR (a.id % 37 = 0 AND b.id % 41 = 0))""").fetchall()
    assert len(got) > 10000
    sizes_differ = crowd = 0
    for ac, asz, bc, bsz, iscrowd, iou, iou_plain in got:
        expected = cocomask.iou([rle(ac, asz)], [rle(bc, bsz)], [iscrowd])[0][0]
        assert iou == expected, (ac, asz, bc, bsz, iscrowd)
        if not iscrowd:
            assert iou_plain == iou
        sizes_differ += asz != bsz
        crowd += iscrowd
    assert sizes_differ > 100 and crowd > 100  # both cases are exercised
    assert all(iou_plain == cocomask.iou([rle(ac, asz)], [rle(bc, bsz)], [0])[0][0]
               for ac, asz, bc, bsz, iscrowd, _, iou_plain in got if iscrowd)


def test_iou_random_masks_in_one_batch():
    """Random masks (empty, full, noisy, blobs) of mixed sizes, all pairs in one call."""
    rng = np.random.default_rng(7)
    masks_a, masks_b = [], []
    for i in range(300):
        h, w = rng.integers(1, 30, 2)
        hb, wb = (h, w) if i % 10 else (h + 1, w)
        kind = i % 5
        a = rng.random((h, w)) < [0.0, 1.0, 0.5, 0.1, 0.9][kind]
        b = rng.random((hb, wb)) < rng.random()
        masks_a.append(np.asfortranarray(a, np.uint8))
        masks_b.append(np.asfortranarray(b, np.uint8))
    ea = [cocomask.encode(m) for m in masks_a]
    eb = [cocomask.encode(m) for m in masks_b]
    crowd = rng.random(len(ea)) < 0.3
    got = sqlfuncs.rle_iou(
        pa.chunked_array([pa.array([e["counts"].decode() for e in ea])]),
        pa.chunked_array([pa.array([e["size"] for e in ea], pa.list_(pa.int32()))]),
        pa.chunked_array([pa.array([e["counts"].decode() for e in eb])]),
        pa.chunked_array([pa.array([e["size"] for e in eb], pa.list_(pa.int32()))]),
        pa.chunked_array([pa.array(crowd)]),
    ).to_pylist()
    expected = [cocomask.iou([x], [y], [int(c)])[0][0] for x, y, c in zip(ea, eb, crowd)]
    assert got == expected


def test_decode_png_equals_pycocotools(mini):
    got = mini.execute("""
        SELECT rle_counts, rle_size, rle_decode(rle_counts, rle_size)
        FROM (SELECT * FROM annotations ORDER BY id LIMIT 40)""").fetchall()
    for counts, size, png in got:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        img = Image.open(io.BytesIO(png))
        assert img.size == (size[1], size[0])
        assert np.array_equal(np.array(img).astype(np.uint8), cocomask.decode(rle(counts, size)))


def test_from_polygons_equals_pycocotools_on_the_source_polygons(mini, coco_mini):
    """The oracle reads the polygons from the JSON files, not from the warehouse."""
    expected = {}
    for split in ("train2017", "val2017"):
        doc = json.loads((coco_mini / "annotations" / f"instances_{split}.json").read_text())
        size = {i["id"]: (i["height"], i["width"]) for i in doc["images"]}
        for a in doc["annotations"]:
            if isinstance(a["segmentation"], list):
                merged = cocomask.merge(cocomask.frPyObjects(a["segmentation"], *size[a["image_id"]]))
                expected[split, a["id"]] = merged["counts"].decode()
    got = mini.execute("""
        SELECT a.split, a.id, rle_from_polygons(a.polygons, i.height, i.width)
        FROM annotations AS a JOIN images AS i ON i.split = a.split AND i.id = a.image_id
        WHERE a.polygons IS NOT NULL""").fetchall()
    assert len(expected) > 1000
    assert {(split, aid): counts for split, aid, counts in got} == expected


def test_literals_nulls_and_errors(con):
    # [2, 3, 1, 1] on a 7x1 mask: "231N" (the example of pipeline/masks.py's header)
    assert con.execute("SELECT rle_area('231N', [7, 1]), rle_bbox('231N', [7, 1]), rle_runs('231N', [7, 1])"
                       ).fetchall() == [(4, [0.0, 2.0, 1.0, 5.0], [2, 3, 1, 1])]
    assert con.execute("SELECT rle_area(NULL, [7, 1]), rle_iou('231N', [7, 1], NULL, [7, 1])").fetchall() == [
        (None, None)]
    assert con.execute("SELECT rle_iou('231N', [7, 1], '231N', [7, 1], iscrowd := 1)").fetchall() == [(1.0,)]
    with pytest.raises(QueryError, match=r"rle_area: .*counts sum to 7, expected h\*w=8 \(counts '231N'"):
        run_sql(con, "SELECT rle_area('231N', [8, 1])")
    with pytest.raises(QueryError, match="rle_bbox: .*ends in the middle of a number"):
        run_sql(con, "SELECT rle_bbox('abc', [3, 3])")
    with pytest.raises(QueryError, match="rle_from_polygons: polygon has 4 coordinates"):
        run_sql(con, "SELECT rle_from_polygons([[0.0, 0, 1, 1]], 4, 4)")


def test_register_twice_and_in_files(tmp_path):
    c = duckdb.connect(str(tmp_path / "x.duckdb"))
    sqlfuncs.register(c)
    sqlfuncs.register(c)  # replaces, no "already exists"
    c.close()
    # only the pure-SQL macros are stored in the file
    plain = duckdb.connect(str(tmp_path / "x.duckdb"), read_only=True)
    stored = {r[0] for r in plain.execute(
        "SELECT function_name FROM duckdb_functions() WHERE database_name = 'x'").fetchall()}
    assert {"kp_joint", "kp_visible_count", "bbox_iou"} <= stored
    assert not stored & set(sqlfuncs.PYTHON_FUNCTIONS)


# ------------------------------------------------------------------ keypoints and boxes
def test_keypoint_macros(con):
    kps = "[10.0, 20.0, 2, 0, 0, 0, 30.0, 5.0, 1]"
    assert con.execute(f"""
        SELECT kp_count({kps}), kp_joint({kps}, 1), kp_joint({kps}, 3), kp_joint({kps}, 4),
               kp_visibility({kps}), kp_labeled_count({kps}), kp_visible_count({kps}), kp_bbox({kps}),
               kp_bbox([0.0, 0, 0])""").fetchall() == [(
        3, {"x": 10.0, "y": 20.0, "v": 2}, {"x": 30.0, "y": 5.0, "v": 1}, None,
        [2, 0, 1], 2, 1, [10.0, 5.0, 20.0, 15.0], None)]
    assert con.execute(f"SELECT kp_joints({kps})[2]").fetchall() == [({"joint": 2, "x": 0.0, "y": 0.0, "v": 0},)]


def test_labeled_count_is_num_keypoints(mini):
    assert mini.execute("SELECT count(*), count(*) FILTER (WHERE kp_labeled_count(keypoints) = num_keypoints) "
                        "FROM keypoints").fetchall() == [(290, 290)]


def test_bbox_iou_equals_pycocotools(con):
    rng = np.random.default_rng(3)
    a = np.round(rng.random((200, 4)) * 50, 1)
    b = np.round(rng.random((200, 4)) * 50, 1)
    crowd = rng.random(200) < 0.5
    got = con.execute(
        "SELECT bbox_iou(a, b, c) FROM (SELECT unnest($1) AS a, unnest($2) AS b, unnest($3) AS c)",
        [a.tolist(), b.tolist(), crowd.tolist()]).fetchall()
    expected = [cocomask.iou(x[None], y[None], [int(c)])[0][0] for x, y, c in zip(a, b, crowd)]
    assert [g[0] for g in got] == pytest.approx(expected, abs=1e-12)
    assert con.execute("SELECT bbox_area([1, 2, 3, 4]), bbox_xyxy([1, 2, 3, 4])").fetchall() == [
        (12.0, [1.0, 2.0, 4.0, 6.0])]

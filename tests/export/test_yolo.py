"""pipeline/export/yolo.py: Ultralytics layout, class mapping, boxes and polygons read back."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from pipeline.export import export
from pipeline.export.yolo import join_outlines, mask_outlines, simplify

SPLITS = ("train2017", "val2017")


def read_labels(path) -> list[tuple[int, list[float]]]:
    """An independent reader of one YOLO label file: (class, numbers) per line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                rows.append((int(fields[0]), [float(x) for x in fields[1:]]))
    return rows


def source(coco_mini, split):
    with open(coco_mini / "annotations" / f"instances_{split}.json", encoding="utf-8") as f:
        return json.load(f)


def clipped_box(bbox, w, h):
    x, y, bw, bh = bbox
    x1, x2 = min(max(x, 0), w), min(max(x + bw, 0), w)
    y1, y2 = min(max(y, 0), h), min(max(y + bh, 0), h)
    return [x1, y1, x2, y2]


@pytest.fixture(scope="module")
def detect_export(mini_warehouse, tmp_path_factory):
    wh, ds = mini_warehouse
    out = tmp_path_factory.mktemp("yolo")
    report = export(out, format="yolo", warehouse=wh, dataset=ds, images="none", classes="all")
    return out, report


def test_data_yaml_has_contiguous_classes_in_category_id_order(detect_export, coco_mini):
    out, _ = detect_export
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["train"] == "images/train2017" and data["val"] == "images/val2017"
    assert "path" not in data
    cats = sorted(source(coco_mini, "val2017")["categories"], key=lambda c: c["id"])
    assert data["nc"] == 80
    assert data["names"] == {i: c["name"] for i, c in enumerate(cats)}
    assert data["category_ids"] == {i: c["id"] for i, c in enumerate(cats)}
    # COCO's 91 ids -> 80 classes
    assert data["category_ids"][0] == 1 and data["names"][0] == "person"
    assert data["names"][23] == "giraffe" and data["category_ids"][23] == 25
    assert data["names"][79] == "toothbrush" and data["category_ids"][79] == 90


def test_an_independent_reader_gets_the_same_boxes_back(detect_export, coco_mini):
    out, _ = detect_export
    data = yaml.safe_load((out / "data.yaml").read_text())
    cls_of = {cid: i for i, cid in data["category_ids"].items()}
    compared = 0
    for split in SPLITS:
        doc = source(coco_mini, split)
        images = {i["id"]: i for i in doc["images"]}
        want: dict[int, list] = {i: [] for i in images}
        for a in doc["annotations"]:
            if not a["iscrowd"]:
                want[a["image_id"]].append(a)
        for image_id, image in images.items():
            w, h = image["width"], image["height"]
            stem = os.path.splitext(image["file_name"])[0]
            got = read_labels(out / "labels" / split / f"{stem}.txt")
            assert len(got) == len(want[image_id])
            for (cls, (cx, cy, bw, bh)), ann in zip(got, want[image_id]):
                assert cls == cls_of[ann["category_id"]]
                back = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
                np.testing.assert_allclose(back, clipped_box(ann["bbox"], w, h), atol=2e-3)
                compared += 1
    assert compared == 739 + 624 - 8 - 5


def test_crowd_annotations_are_left_out_unless_asked(mini_warehouse, detect_export, tmp_path):
    out, report = detect_export
    assert report.files["labels/train2017"]["skipped"] == 8
    assert report.left_out == {"crowd": 8 + 5}
    wh, ds = mini_warehouse
    with_crowd = export(tmp_path, format="yolo", warehouse=wh, dataset=ds, images="none", include_crowd=True)
    assert with_crowd.files["labels/train2017"]["labels"] == report.files["labels/train2017"]["labels"] + 8
    assert with_crowd.files["labels/val2017"]["labels"] == report.files["labels/val2017"]["labels"] + 5


def test_segment_polygons_read_back_to_the_source_polygons(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path, format="yolo", task="segment", warehouse=wh, dataset=ds, images="none", splits=["val2017"])
    doc = source(coco_mini, "val2017")
    single = 0
    for image in doc["images"]:
        w, h = image["width"], image["height"]
        anns = [a for a in doc["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        got = read_labels(tmp_path / "labels" / "val2017" / (os.path.splitext(image["file_name"])[0] + ".txt"))
        assert len(got) == len(anns)
        for (_, coords), ann in zip(got, anns):
            pts = np.asarray(coords).reshape(-1, 2) * [w, h]
            parts = [np.asarray(p).reshape(-1, 2) for p in ann["segmentation"]]
            if len(parts) == 1:
                expect = np.clip(parts[0], 0, [w, h])
                np.testing.assert_allclose(pts, expect, atol=2e-3)
                single += 1
            else:  # joined outline: every vertex of every part is on it
                for p in parts:
                    for v in np.clip(p, 0, [w, h]):
                        assert np.min(np.abs(pts - v).sum(1)) < 4e-3
    assert single > 500


def test_crowd_rle_becomes_a_polygon_that_covers_the_mask(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path, format="yolo", task="segment", include_crowd=True, where="iscrowd = 1", warehouse=wh,
           dataset=ds, images="none")
    checked = 0
    for split in SPLITS:
        doc = source(coco_mini, split)
        images = {i["id"]: i for i in doc["images"]}
        for a in doc["annotations"]:
            if not a["iscrowd"]:
                continue
            image = images[a["image_id"]]
            w, h = image["width"], image["height"]
            got = read_labels(tmp_path / "labels" / split / (os.path.splitext(image["file_name"])[0] + ".txt"))
            want = mask_utils.decode(mask_utils.frPyObjects(a["segmentation"], h, w))
            best = 0.0
            for _, coords in got:
                poly = (np.asarray(coords).reshape(-1, 2) * [w, h]).ravel().tolist()
                drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w)))
                best = max(best, (drawn & want).sum() / (drawn | want).sum())
            assert best > 0.9
            checked += 1
    assert checked == 13


def test_layout_and_linked_images(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path, format="yolo", warehouse=wh, dataset=ds, where="category_name = 'dog'", images="link",
           image_root=str(coco_mini))
    images = sorted((tmp_path / "images" / "val2017").iterdir())
    labels = sorted((tmp_path / "labels" / "val2017").iterdir())
    assert images and [p.stem for p in images] == [p.stem for p in labels]
    for p in images:
        original = coco_mini / "val2017" / p.name
        assert p.read_bytes() == original.read_bytes()
        assert p.is_symlink() or os.path.samefile(p, original)
    classes = Counter(cls for p in labels for cls, _ in read_labels(p))
    assert set(classes) == {0}  # dog, category id 18: the only class of the subset (--classes used)
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data["nc"] == 1 and data["names"] == {0: "dog"} and data["category_ids"] == {0: 18}


# ---------------------------------------------------------------------------- geometry


def _draw(loops, h, w):
    rle = mask_utils.merge(mask_utils.frPyObjects([loop.ravel().tolist() for loop in loops], h, w))
    return mask_utils.decode(rle)


@pytest.mark.parametrize(
    "rows",
    [
        ["......", ".##...", ".##...", "......"],
        ["#####.", "#.....", "#.###.", "###.#."],  # an L with a hook, touching the border
        ["##....", "##....", "..##..", "..##.."],  # regions touching at a corner only
    ],
)
def test_mask_outlines_trace_pixel_regions_exactly(rows):
    mask = np.array([[c == "#" for c in r] for r in rows], dtype=np.uint8)
    loops = mask_outlines(mask)
    assert all(len(loop) >= 4 for loop in loops)
    np.testing.assert_array_equal(_draw(loops, *mask.shape), mask)


def test_mask_outlines_fill_holes_and_split_corner_touching_regions():
    mask = np.zeros((7, 7), np.uint8)
    mask[1:6, 1:6] = 1
    mask[3, 3] = 0
    (outer,) = mask_outlines(mask)
    assert sorted(map(tuple, outer.tolist())) == [(1, 1), (1, 6), (6, 1), (6, 6)]
    corner = np.array([[1, 0], [0, 1]], np.uint8)
    assert len(mask_outlines(corner)) == 2


def test_simplify_and_join_keep_the_shape():
    square = np.array([[0, 0], [1, 0], [2, 0], [2, 1], [2, 2], [1, 2], [0, 2], [0, 1]], float)
    assert sorted(map(tuple, simplify(square).tolist())) == [(0, 0), (0, 2), (2, 0), (2, 2)]
    a = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    b = a + 5
    joined = join_outlines([a, b])
    assert len(joined) == len(a) + len(b) + 2
    assert {tuple(p) for p in joined} == {tuple(p) for p in np.concatenate([a, b])}


# ---------------------------------------------------------------------------- the image edge

EDGE_W, EDGE_H = 100, 80


def _poly_ann(aid, points, bbox=None):
    xs, ys = points[0::2], points[1::2]
    box = bbox or [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {"id": aid, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": float(box[2] * box[3]), "bbox": box,
            "segmentation": [points]}


def _box_poly(x, y, w, h):
    return [x, y, x + w, y, x + w, y + h, x, y + h]


# (annotation, in the image after clipping?)
EDGE_ANNOTATIONS = [
    (_poly_ann(1, _box_poly(-10, -5, 30, 25)), True),  # crosses the left and top edges
    (_poly_ann(2, _box_poly(90, 70, 20, 20)), True),  # crosses the right and bottom edges
    (_poly_ann(3, _box_poly(-10, -10, 200, 200)), True),  # covers the image and more
    (_poly_ann(4, _box_poly(90, 0, 10, 80)), True),  # inside, on the right edge
    (_poly_ann(5, [-20, 40, 50, 10, 50, 70]), True),  # a triangle with a vertex left of the image
    (_poly_ann(6, _box_poly(120, 10, 10, 10)), False),  # wholly right of the image
    (_poly_ann(7, _box_poly(10, -30, 10, 10)), False),  # wholly above it
    (_poly_ann(8, _box_poly(100, 10, 10, 10)), False),  # outside, touching the right edge
    (_poly_ann(9, [110, 10, 130, 10, 120, 30, 105, 90]), False),  # a polygon beyond the right and bottom edges
]
EDGE_DOC = {
    "images": [{"id": 1, "file_name": "edge.jpg", "width": EDGE_W, "height": EDGE_H}],
    "categories": [{"id": 1, "name": "thing"}],
    "annotations": [a for a, _ in EDGE_ANNOTATIONS],
}


@pytest.fixture(scope="module")
def edge_warehouse(tmp_path_factory):
    from pipeline.ingest.run import run_ingest

    src = tmp_path_factory.mktemp("edge-src") / "instances_val2017.json"
    src.write_text(json.dumps(EDGE_DOC))
    wh = tmp_path_factory.mktemp("edge-wh")
    run_ingest([str(src)], warehouse=str(wh), dataset="edge", workers=1)
    return str(wh), "edge"


def test_boxes_across_the_image_edge_are_clipped_and_boxes_outside_it_dropped(edge_warehouse, tmp_path):
    report = export(tmp_path, format="yolo", warehouse=edge_warehouse[0], dataset=edge_warehouse[1], images="none")
    inside = [a for a, kept in EDGE_ANNOTATIONS if kept]
    assert report.files["labels/val2017"] == {"images": 1, "labels": len(inside), "skipped": 4}
    assert report.left_out == {"outside image": 4}
    got = read_labels(tmp_path / "labels" / "val2017" / "edge.txt")
    assert [cls for cls, _ in got] == [0] * len(inside)
    for (_, (cx, cy, bw, bh)), ann in zip(got, inside):
        x1, y1, x2, y2 = clipped_box(ann["bbox"], EDGE_W, EDGE_H)
        want = [(x1 + x2) / 2 / EDGE_W, (y1 + y2) / 2 / EDGE_H, (x2 - x1) / EDGE_W, (y2 - y1) / EDGE_H]
        np.testing.assert_allclose([cx, cy, bw, bh], want, atol=1e-6)
        assert 0 <= cx - bw / 2 and cx + bw / 2 <= 1 + 1e-6 and 0 <= cy - bh / 2 and cy + bh / 2 <= 1 + 1e-6


def test_polygons_across_the_image_edge_are_clipped_and_polygons_outside_it_dropped(edge_warehouse, tmp_path):
    report = export(tmp_path, format="yolo", task="segment", warehouse=edge_warehouse[0],
                    dataset=edge_warehouse[1], images="none")
    inside = [a for a, kept in EDGE_ANNOTATIONS if kept]
    assert report.files["labels/val2017"] == {"images": 1, "labels": len(inside), "skipped": 4}
    assert report.left_out == {"outside image": 4}
    got = read_labels(tmp_path / "labels" / "val2017" / "edge.txt")
    assert len(got) == len(inside)
    for (_, coords), ann in zip(got, inside):
        (points,) = ann["segmentation"]
        want = [min(max(v, 0), EDGE_W if k % 2 == 0 else EDGE_H) / (EDGE_W if k % 2 == 0 else EDGE_H)
                for k, v in enumerate(points)]
        np.testing.assert_allclose(coords, want, atol=1e-6)

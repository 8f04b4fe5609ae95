"""evaluate: pycocotools' COCOeval is the oracle, on coco-mini with results made from its ground truth."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import shutil

import numpy as np
import pytest
from pycocotools import mask as cm
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.evaluate import metrics as ev
from pipeline.cli import main
from pipeline.errors import CocolakeError, QueryError
from pipeline.evaluate.detections import run_ingest_results
from pipeline.query.views import connect

GT_FILES = {"bbox": "instances_val2017.json", "segm": "instances_val2017.json",
            "keypoints": "person_keypoints_val2017.json"}
# (run name, IoU type, seed, scores rounded to 0.1 so that many tie)
RUNS = [("box", "bbox", 1, False), ("box-ties", "bbox", 2, True), ("mask", "segm", 3, False),
        ("mask-ties", "segm", 4, True), ("kp", "keypoints", 5, False), ("kp-ties", "keypoints", 6, True)]


def make_results(gt: dict, iou_type: str, seed: int, ties: bool) -> list[dict]:
    """Detections from the ground truth: jittered boxes, shifted masks and keypoints, misses
    (15%), duplicates (20%), wrong labels (10%), detections of crowd regions, and background
    false positives on random images."""
    rng = np.random.default_rng(seed)
    images = {i["id"]: i for i in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]

    def score():
        s = float(rng.random())
        return round(s, 1) if ties else s

    out = []
    for a in gt["annotations"]:
        if rng.random() < 0.15 and not a["iscrowd"]:
            continue
        for _ in range(1 + int(rng.random() < 0.2)):
            im = images[a["image_id"]]
            x, y, w, h = a["bbox"]
            dx, dy = rng.normal(0, 0.08 * w + 1), rng.normal(0, 0.08 * h + 1)
            sw, sh = np.exp(rng.normal(0, 0.1, 2))
            cid = a["category_id"] if rng.random() > 0.1 or iou_type == "keypoints" else int(rng.choice(cats))
            d = {"image_id": a["image_id"], "category_id": cid, "score": score()}
            if iou_type == "bbox":
                d["bbox"] = [x + dx, y + dy, w * sw, h * sh]
            elif iou_type == "segm":
                seg = a["segmentation"]
                if isinstance(seg, list):  # shifted polygons, half of them sent as RLE
                    poly = [[v + (dx if k % 2 == 0 else dy) for k, v in enumerate(p)] for p in seg]
                    rle = cm.merge(cm.frPyObjects(poly, im["height"], im["width"]))
                    d["segmentation"] = poly if rng.random() < 0.5 else {
                        "size": rle["size"], "counts": rle["counts"].decode()}
                else:  # crowd: the region's mask, rolled
                    m = cm.decode(cm.frPyObjects(seg, im["height"], im["width"]))
                    rle = cm.encode(np.asfortranarray(np.roll(m, (int(dy), int(dx)), axis=(0, 1))))
                    d["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                d["bbox"] = [x + dx, y + dy, w * sw, h * sh]
            else:
                kp = np.array(a["keypoints"], float).reshape(-1, 3)
                if a["num_keypoints"] == 0:
                    kp[:, 0], kp[:, 1] = x + rng.random(len(kp)) * w, y + rng.random(len(kp)) * h
                kp[:, 0] += rng.normal(0, 0.03 * w + 1, len(kp)) + dx * 0.2
                kp[:, 1] += rng.normal(0, 0.03 * h + 1, len(kp)) + dy * 0.2
                kp[:, 2] = 1
                d["keypoints"] = kp.ravel().tolist()
            out.append(d)
    for _ in range(len(gt["annotations"]) // 3):
        im = gt["images"][int(rng.integers(len(gt["images"])))]
        w, h = rng.uniform(5, im["width"] / 2), rng.uniform(5, im["height"] / 2)
        x, y = rng.uniform(0, im["width"] - w), rng.uniform(0, im["height"] - h)
        d = {"image_id": im["id"], "category_id": int(rng.choice(cats)), "score": score()}
        if iou_type == "keypoints":
            d["keypoints"] = np.column_stack([x + rng.random(17) * w, y + rng.random(17) * h, np.ones(17)]).ravel().tolist()
        else:
            d["bbox"] = [x, y, w, h]
            if iou_type == "segm":
                d["segmentation"] = [[x, y, x + w, y, x + w * 0.5, y + h]]
        out.append(d)
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def warehouse(mini_warehouse, coco_mini, tmp_path_factory):
    """A copy of the coco-mini warehouse with the runs of RUNS ingested."""
    root, dataset = mini_warehouse
    tmp = tmp_path_factory.mktemp("eval")
    shutil.copytree(f"{root}/{dataset}", tmp / dataset)
    for run, iou_type, seed, ties in RUNS:
        gt = json.loads((coco_mini / "annotations" / GT_FILES[iou_type]).read_text())
        path = tmp / f"{run}_results.json"
        path.write_text(json.dumps(make_results(gt, iou_type, seed, ties)))
        run_ingest_results(str(path), run=run, warehouse=str(tmp), dataset=dataset)
    return str(tmp), dataset


@pytest.fixture(scope="module")
def con(warehouse):
    c = connect(*warehouse)
    yield c
    c.close()


@functools.lru_cache(maxsize=None)
def cocoeval(gt_path: str, results_path: str, iou_type: str, img_ids=None, cat_ids=None) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        e = COCOeval(gt, gt.loadRes(json.loads(open(results_path).read())), iou_type)
        if img_ids is not None:
            e.params.imgIds, e.params.catIds = list(img_ids), list(cat_ids)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def oracle(coco_mini, warehouse, run, iou_type, img_ids=None, cat_ids=None) -> COCOeval:
    return cocoeval(str(coco_mini / "annotations" / GT_FILES[iou_type]), f"{warehouse[0]}/{run}_results.json",
                    iou_type, img_ids, cat_ids)


def assert_same(result: ev.Evaluation, e: COCOeval):
    assert len(result.stats) == len(e.stats)
    np.testing.assert_allclose(result.stats, e.stats, atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.precision, e.eval["precision"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.recall, e.eval["recall"], atol=1e-4, rtol=0)
    assert result.img_ids.tolist() == list(e.params.imgIds)
    assert result.cat_ids.tolist() == list(e.params.catIds)


@pytest.mark.parametrize("run, iou_type", [(r, t) for r, t, _, _ in RUNS])
def test_equals_cocoeval(coco_mini, warehouse, con, run, iou_type):
    result = ev.evaluate(con, run, iou_type=iou_type)
    e = oracle(coco_mini, warehouse, run, iou_type)
    assert_same(result, e)
    assert result.stats[0] > 0.05  # the runs are neither empty nor trivial
    assert (result.split, result.n_images) == ("val2017", 79)


WHERE = [
    ("box", "bbox", "category_name IN ('person', 'car', 'dog', 'cup') AND area_bucket <> 'small'",
     lambda a, names: names[a["category_id"]] in ("person", "car", "dog", "cup") and a["area"] >= 32 ** 2),
    ("mask", "segm", "supercategory = 'animal' OR iscrowd = 1",
     lambda a, names: a["category_id"] in names["animal"] or a["iscrowd"] == 1),
    ("kp", "keypoints", "area_bucket = 'large'", lambda a, names: a["area"] >= 96 ** 2),
]


@pytest.mark.parametrize("run, iou_type, where, select", WHERE)
def test_where_equals_cocoeval_with_img_and_cat_ids(coco_mini, warehouse, con, run, iou_type, where, select):
    inst = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    names = {c["id"]: c["name"] for c in inst["categories"]}
    names["animal"] = {c["id"] for c in inst["categories"] if c["supercategory"] == "animal"}
    chosen = [a for a in inst["annotations"] if select(a, names)]
    img_ids = tuple(sorted({a["image_id"] for a in chosen}))
    gt_cats = {c["id"] for c in json.loads((coco_mini / "annotations" / GT_FILES[iou_type]).read_text())["categories"]}
    cat_ids = tuple(sorted({a["category_id"] for a in chosen} & gt_cats))
    result = ev.evaluate(con, run, iou_type=iou_type, where=where)
    assert 0 < result.n_images < 79 and result.n_categories == len(cat_ids)
    assert_same(result, oracle(coco_mini, warehouse, run, iou_type, img_ids, cat_ids))


def test_match_table_equals_cocoeval_matches(coco_mini, warehouse, con, capsys):
    root, dataset = warehouse
    assert main(["evaluate", "--run", "box-ties", "--warehouse", root, "--dataset", dataset,
                 "--format", "json", "--per-category"]) == 0
    out = json.loads(capsys.readouterr().out)
    e = oracle(coco_mini, warehouse, "box-ties", "bbox")
    np.testing.assert_allclose(list(out["stats"].values()), e.stats, atol=1e-4)
    assert out["stats"]["AP"] == pytest.approx(e.stats[0], abs=1e-4) and len(out["per_category"]) == 80
    expected = {}
    for img in e.evalImgs:
        if img is None or img["aRng"] != [0, 1e10]:
            continue
        for d, row, ig in zip(img["dtIds"], img["dtMatches"].T, img["dtIgnore"].T):
            for t, (g, i) in enumerate(zip(row, ig)):
                expected[d, round(float(e.params.iouThrs[t]), 2)] = (
                    "ignored" if i else "tp" if g else "fp", int(g) if g else None)
    c = connect(root, dataset)
    got = c.execute("SELECT prediction_id, iou_threshold, outcome, gt_id FROM prediction_matches "
                    "WHERE run = 'box-ties' AND outcome <> 'fn'").fetchall()
    assert {(d, t): (o, g) for d, t, o, g in got} == expected
    fn = c.execute("SELECT count(*) FROM prediction_matches WHERE run = 'box-ties' AND outcome = 'fn' "
                   "AND iou_threshold = 0.5").fetchone()[0]
    tp = sum(1 for (d, t), (o, _) in expected.items() if t == 0.5 and o == "tp")
    assert fn == c.execute("SELECT count(*) FROM annotations WHERE split = 'val2017' AND kind = 'instances' "
                           "AND iscrowd = 0").fetchone()[0] - tp
    fp = c.execute("SELECT sum(false_positives), sum(fp_duplicate + fp_localisation + fp_confusion + fp_background) "
                   "FROM prediction_false_positives WHERE run = 'box-ties' AND iou_threshold = 0.5").fetchone()
    assert fp[0] == fp[1] == sum(1 for (d, t), (o, _) in expected.items() if t == 0.5 and o == "fp")
    assert c.execute("SELECT count(*) FROM prediction_confusions WHERE run = 'box-ties'").fetchone()[0] > 0
    assert c.execute("SELECT sum(true_positives) FROM prediction_image_scores WHERE run = 'box-ties' "
                     "AND iou_threshold = 0.5").fetchone()[0] == tp


def test_pr_curves(coco_mini, warehouse, con):
    curves = ev.pr_curves(con, "mask", "segm")
    p = oracle(coco_mini, warehouse, "mask", "segm").eval["precision"][:, :, :, 0, 2]
    expected = [np.mean(row[row > -1]) for row in p[0]]
    np.testing.assert_allclose(curves["overall"]["0.50"], expected, atol=1e-9)
    assert len(curves["recall"]) == 101 and len(curves["per_category"]) == 80
    person = next(c for c in curves["per_category"] if c["category_name"] == "person")
    np.testing.assert_allclose(person["precision"]["0.75"], p[5, :, 0], atol=1e-9)


def test_errors_name_the_problem(con):
    with pytest.raises(CocolakeError, match="run 'nope' has no detections .*runs: box, box-ties"):
        ev.evaluate(con, "nope")
    with pytest.raises(QueryError, match="no_such_column"):
        ev.evaluate(con, "box", where="no_such_column = 1")
    with pytest.raises(CocolakeError, match="unknown IoU type 'mask'"):
        ev.evaluate(con, "box", iou_type="mask")


def test_detections_without_masks_are_their_boxes_in_segm(coco_mini, warehouse, con):
    """loadRes turns a box-only detection into the polygon of its box; so does segm evaluation."""
    result = ev.evaluate(con, "box", iou_type="segm")
    assert_same(result, oracle(coco_mini, warehouse, "box", "segm"))


def test_nothing_selected_gives_minus_one(con):
    result = ev.evaluate(con, "box", where="category_name = 'no such category'")
    assert result.n_images == 0 and (result.stats == -1).all()
    assert copy.deepcopy(result.summary())["AP"] == -1


# ---------------------------------------------------------------------------- edges coco-mini never reaches
# COCOeval's area ranges are closed at both ends (an object is left out when `area < lo or
# area > hi`): an area of exactly 32² counts in "small" and in "medium". Detections are
# capped at maxDets=100 per image and category (`dt[:maxDet]` after the score sort).

EDGE_IMAGES = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (1, 2, 3)]
EDGE_CATEGORIES = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
EDGE_AREAS = (1023.9, 1024.0, 1024.1, 9215.9, 9216.0, 9216.1)  # on both sides of 32² and 96²


def _box_ann(aid, image_id, cat, x, y, w, h, area=None):
    return {"id": aid, "image_id": image_id, "category_id": cat, "iscrowd": 0, "bbox": [x, y, w, h],
            "area": float(w * h if area is None else area),
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def edge_area_gt() -> dict:
    """Ground truths whose `area` is exactly 32² or 96² or just beside them, in both categories."""
    anns = []
    for image in EDGE_IMAGES:
        for k, area in enumerate(EDGE_AREAS):
            side = 32.0 if area < 5000 else 96.0
            x, y = 10 + (k % 3) * 200, 10 + (k // 3) * 200
            anns.append(_box_ann(len(anns) + 1, image["id"], 1 + k % 2, x, y, side, side, area))
    return {"images": EDGE_IMAGES, "categories": EDGE_CATEGORIES, "annotations": anns}


def edge_area_results(gt: dict) -> list[dict]:
    """Hits on most ground truths, misses, and false positives whose box area is exactly 32² or 96²."""
    rng = np.random.default_rng(7)
    out = []
    for a in gt["annotations"]:
        if a["id"] % 5 == 0:
            continue  # a miss
        x, y, w, h = a["bbox"]
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + 1, y + 1, w, h],
                    "score": round(float(rng.uniform(0.2, 1.0)), 3)})
    for image in EDGE_IMAGES:  # background boxes of 32x32 and 96x96, in the empty bottom row
        for k, side in enumerate((32.0, 96.0, 32.0, 96.0)):
            out.append({"image_id": image["id"], "category_id": 1 + k % 2, "bbox": [10 + k * 150, 370, side, side],
                        "score": round(float(rng.uniform(0.0, 1.0)), 3)})
    return out


def capped_gt() -> dict:
    """One image with 40 objects of category 1 (a 8x5 grid of 50x50 boxes) and 3 of category 2."""
    anns = [_box_ann(k + 1, 1, 1, 20 + (k % 8) * 70, 20 + (k // 8) * 70, 50, 50) for k in range(40)]
    anns += [_box_ann(41 + k, 1, 2, 20 + k * 70, 400, 50, 50) for k in range(3)]
    return {"images": EDGE_IMAGES[:1], "categories": EDGE_CATEGORIES, "annotations": anns}


def capped_results(gt: dict) -> list[dict]:
    """150 detections of category 1 on one image: 20 exact hits above 110 background boxes, 20
    exact hits below them (ranks 130..149, past the cap); category 2's 3 hits score lowest of all."""
    rng = np.random.default_rng(11)
    cat1 = [a for a in gt["annotations"] if a["category_id"] == 1]
    out = []
    for k, a in enumerate(cat1):
        x, y, w, h = a["bbox"]
        score = 0.9 + 0.09 * rng.random() if k < 20 else 0.1 * rng.random()
        out.append({"image_id": 1, "category_id": 1, "bbox": [x, y, w, h], "score": score})
    for k in range(110):  # background: inside the image, clear of every object
        out.append({"image_id": 1, "category_id": 1, "bbox": [float(k % 60) * 10, 460.0, 8.0, 8.0],
                    "score": 0.2 + 0.6 * float(rng.random())})
    for a in gt["annotations"][40:]:
        out.append({"image_id": 1, "category_id": 2, "bbox": a["bbox"], "score": 0.01})
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def edge_runs(tmp_path_factory):
    """Two datasets at the edges, each with its run "edge": (warehouse, {name: (gt path, results path)})."""
    from pipeline.ingest.run import run_ingest

    root = tmp_path_factory.mktemp("edges")
    files = {}
    for name, gt in (("areas", edge_area_gt()), ("capped", capped_gt())):
        src = root / name / "instances_val2017.json"
        src.parent.mkdir()
        src.write_text(json.dumps(gt))
        results = root / name / "results.json"
        make = edge_area_results if name == "areas" else capped_results
        results.write_text(json.dumps(make(gt)))
        run_ingest([str(src)], warehouse=str(root / "wh"), dataset=name, workers=1)
        run_ingest_results(str(results), run="edge", warehouse=str(root / "wh"), dataset=name)
        files[name] = (str(src), str(results))
    return str(root / "wh"), files


def _cocoeval(gt_path: str, results_path: str, area_rng=None, max_dets=None) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        e = COCOeval(gt, gt.loadRes(results_path), "bbox")
        if area_rng is not None:
            e.params.areaRng = area_rng
        if max_dets is not None:
            e.params.maxDets = max_dets
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def _evaluate_json(capsys, warehouse: str, dataset: str) -> dict:
    assert main(["evaluate", "--run", "edge", "--warehouse", warehouse, "--dataset", dataset, "--format", "json",
                 "--per-category"]) == 0
    return json.loads(capsys.readouterr().out)


def test_area_ranges_include_both_ends_as_cocoeval(edge_runs, capsys):
    """Ground truths and false positives of area exactly 32² and 96² count in both ranges they bound."""
    warehouse, files = edge_runs
    e = _cocoeval(*files["areas"])
    out = _evaluate_json(capsys, warehouse, "areas")
    np.testing.assert_allclose(list(out["stats"].values()), e.stats, atol=1e-4, rtol=0)
    con = connect(warehouse, "areas")
    assert_same(ev.evaluate(con, "edge"), e)
    con.close()
    # the data reaches the edge: with upper ends made exclusive, COCOeval's small/medium numbers move
    exclusive = [[lo, np.nextafter(hi, 0)] for lo, hi in e.params.areaRng]
    moved = _cocoeval(*files["areas"], area_rng=exclusive).stats
    assert all(abs(moved[k] - e.stats[k]) > 0.01 for k in (3, 4, 10)), (moved, e.stats)  # APs, APm, ARm
    # and the ground truth of exactly 32² is in "small" and in "medium"
    per_range = {tuple(img["aRng"]): img for img in e.evalImgs if img is not None and img["image_id"] == 1
                 and img["category_id"] == 2}
    exact = next(a["id"] for a in json.loads(open(files["areas"][0]).read())["annotations"]
                 if a["image_id"] == 1 and a["area"] == 1024.0)
    for rng in ([0, 32 ** 2], [32 ** 2, 96 ** 2]):
        img = per_range[tuple(rng)]
        assert not img["gtIgnore"][img["gtIds"].index(exact)]


def test_at_most_100_detections_per_image_and_category(edge_runs, capsys):
    """Detections past the 100th best of an (image, category) are not evaluated, as in COCOeval."""
    warehouse, files = edge_runs
    e = _cocoeval(*files["capped"])
    out = _evaluate_json(capsys, warehouse, "capped")
    np.testing.assert_allclose(list(out["stats"].values()), e.stats, atol=1e-4, rtol=0)
    assert [(r["category_id"], r["detections"]) for r in out["per_category"]] == [(1, 100), (2, 3)]
    con = connect(warehouse, "capped")
    result = ev.evaluate(con, "edge")
    assert_same(result, e)
    kept = {d for img in e.evalImgs if img is not None and img["aRng"] == [0, 1e10] for d in img["dtIds"]}
    assert set(result.matching["dt"].ids.tolist()) == kept and len(kept) == 103
    # the data needs the cap: with room for every detection, COCOeval's AR@100 would be 1.0
    uncapped = _cocoeval(*files["capped"], max_dets=[1, 10, 1000]).stats
    assert e.stats[8] == pytest.approx((20 / 40 + 3 / 3) / 2) and uncapped[8] == pytest.approx(1.0)
    # the stored match table holds the 103 evaluated detections, plus the 20 misses per threshold
    got = con.execute("SELECT outcome, count(DISTINCT prediction_id), count(*) FROM prediction_matches "
                      "WHERE run = 'edge' AND iou_threshold = 0.5 GROUP BY outcome ORDER BY 1").fetchall()
    con.close()
    assert got == [("fn", 0, 20), ("fp", 80, 80), ("tp", 23, 23)]

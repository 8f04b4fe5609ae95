"""LVIS evaluation: the ``lvis`` package's LVISEval is the oracle, on coco-mini made LVIS-shaped.

The ground truth is coco-mini's val2017 instances with LVIS's fields added (category
``frequency``, image ``neg_category_ids`` and ``not_exhaustive_category_ids``); the
detections are made from it with noise, plus detections that hit each federated rule: of a
negative category (false positives), of a not-exhaustive one (ignored when unmatched), of an
unverified one (dropped), and an image with more than 300 detections (cut at 300).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import CocolakeError
from pipeline.evaluate import lvis as lv
from pipeline.evaluate import metrics as ev
from pipeline.evaluate.detections import run_ingest_results
from pipeline.ingest.run import run_ingest
from pipeline.query.views import connect
from tests.evaluate.test_metrics import make_results

RUNS = [("lvis-box", "bbox", 11, False), ("lvis-box-ties", "bbox", 12, True), ("lvis-mask", "segm", 13, False)]


def lvis_ground_truth(coco: dict, rng) -> dict:
    gt = json.loads(json.dumps(coco))
    for c in gt["categories"]:
        c["frequency"] = "rcf"[c["id"] % 3]
    cats = [c["id"] for c in gt["categories"]]
    present: dict = {}
    for a in gt["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    for im in gt["images"]:
        pos = sorted(present.get(im["id"], ()))
        absent = [c for c in cats if c not in pos]
        im["neg_category_ids"] = sorted(int(c) for c in rng.choice(absent, 6, replace=False))
        im["not_exhaustive_category_ids"] = sorted(int(c) for c in pos if rng.random() < 0.3)
    return gt


def rule_detections(gt: dict, iou_type: str, rng) -> list[dict]:
    """Background detections of negative, not-exhaustive and unverified categories; one crowded image."""
    present: dict = {}
    for a in gt["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    cats = [c["id"] for c in gt["categories"]]
    out = []

    def det(im, cid):
        w, h = rng.uniform(5, im["width"] / 2), rng.uniform(5, im["height"] / 2)
        x, y = rng.uniform(0, im["width"] - w), rng.uniform(0, im["height"] - h)
        d = {"image_id": im["id"], "category_id": int(cid), "score": float(rng.random()), "bbox": [x, y, w, h]}
        if iou_type == "segm":
            d["segmentation"] = [[x, y, x + w, y, x + w * 0.5, y + h]]
        return d

    for im in gt["images"]:
        verified = set(im["neg_category_ids"]) | present.get(im["id"], set())
        unverified = [c for c in cats if c not in verified]
        for cid in im["neg_category_ids"][:2]:
            out.append(det(im, cid))
        for cid in im["not_exhaustive_category_ids"]:
            out.append(det(im, cid))
        for cid in rng.choice(unverified, 2, replace=False):
            out.append(det(im, cid))
    crowded = next(im for im in gt["images"] if len(present.get(im["id"], ())) >= 2)
    mine = sorted(present[crowded["id"]]) + crowded["neg_category_ids"]
    out += [det(crowded, mine[i % len(mine)]) for i in range(320)]
    return out


@pytest.fixture(scope="module")
def lvis_warehouse(coco_mini, tmp_path_factory):
    """A warehouse with the LVIS-shaped val2017 and the runs of RUNS; (root, dataset, gt path)."""
    tmp = tmp_path_factory.mktemp("lvis")
    rng = np.random.default_rng(7)
    gt = lvis_ground_truth(json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text()), rng)
    (tmp / "annotations").mkdir()
    gt_path = tmp / "annotations" / "instances_val2017.json"
    gt_path.write_text(json.dumps(gt))
    run_ingest([str(tmp / "annotations")], warehouse=str(tmp / "wh"), dataset="lvis", workers=1)
    for run, iou_type, seed, ties in RUNS:
        dets = make_results(gt, iou_type, seed, ties) + rule_detections(gt, iou_type, np.random.default_rng(seed))
        path = tmp / f"{run}_results.json"
        path.write_text(json.dumps(dets))
        run_ingest_results(str(path), run=run, warehouse=str(tmp / "wh"), dataset="lvis")
    return str(tmp / "wh"), "lvis", str(gt_path)


@pytest.fixture(scope="module")
def con(lvis_warehouse):
    c = connect(*lvis_warehouse[:2])
    yield c
    c.close()


@functools.lru_cache(maxsize=None)
def lvis_eval(gt_path: str, results_path: str, iou_type: str, img_ids=None, cat_ids=None):
    np.float = float  # the lvis package still uses np.float, which numpy 2 removed
    from lvis import LVIS, LVISEval, LVISResults

    with contextlib.redirect_stdout(io.StringIO()):
        gt = LVIS(gt_path)
        e = LVISEval(gt, LVISResults(gt, results_path, max_dets=300), iou_type)
        if img_ids is not None:
            e.params.img_ids, e.params.cat_ids = list(img_ids), list(cat_ids)
        e.run()
    return e


def oracle(lvis_warehouse, run, iou_type, img_ids=None, cat_ids=None):
    root = lvis_warehouse[2].rsplit("/annotations/", 1)[0]
    return lvis_eval(lvis_warehouse[2], f"{root}/{run}_results.json", iou_type, img_ids, cat_ids)


def assert_same(result: ev.Evaluation, e):
    assert list(result.summary()) == list(e.results)
    np.testing.assert_allclose(result.stats, list(e.results.values()), atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.precision[..., 0], e.eval["precision"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.recall[..., 0], e.eval["recall"], atol=1e-4, rtol=0)
    assert result.img_ids.tolist() == list(e.params.img_ids)
    assert result.cat_ids.tolist() == list(e.params.cat_ids)


@pytest.mark.parametrize("run, iou_type", [(r, t) for r, t, _, _ in RUNS])
def test_equals_lvis_eval(lvis_warehouse, con, run, iou_type):
    result = lv.evaluate(con, run, iou_type=iou_type)
    e = oracle(lvis_warehouse, run, iou_type)
    assert_same(result, e)
    assert result.protocol == "lvis" and result.stats[0] > 0.05
    assert all(v > 0 for k, v in result.summary().items() if k in ("APr", "APc", "APf"))
    # the COCO protocol gives other numbers on the same run: the rules change the result
    assert abs(ev.evaluate(con, run, iou_type=iou_type).stats[0] - result.stats[0]) > 1e-3


def test_each_rule_is_hit(lvis_warehouse, con):
    """The detections that the rules concern exist and are handled as LVISEval handles them."""
    e = oracle(lvis_warehouse, "lvis-box", "bbox")
    result = lv.evaluate(con, "lvis-box", iou_type="bbox")
    kept = set(result.matching["dt"].ids.tolist())
    # LVISResults numbers detections from 1 in file order after its per-image cut; ours are file positions
    n_all = con.execute("SELECT count(*) FROM raw_predictions WHERE run = 'lvis-box'").fetchall()[0][0]
    top = set(lv._top_per_image(con, "lvis-box", "val2017").tolist())
    assert len(top) < n_all  # the crowded image lost detections
    assert len(kept) < len(top)  # unverified categories were dropped
    assert len(kept) == sum(len(v) for v in e._dts.values())
    ig = result.matching["dt_ig"][0] & (result.matching["dt_match"][0] < 0)
    assert ig.any()  # unmatched detections of not-exhaustive categories are ignored
    n_ignored = sum(int(np.sum(x["dt_ignore"][0] & (x["dt_matches"][0] == 0))) for x in e.eval_imgs
                    if x is not None and x["area_rng"] == e.params.area_rng[0])
    assert int(ig.sum()) == n_ignored


def test_where_equals_lvis_eval_with_img_and_cat_ids(lvis_warehouse, con):
    gt = json.loads(open(lvis_warehouse[2]).read())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    chosen = [a for a in gt["annotations"] if names[a["category_id"]] in ("person", "car", "dog", "cup", "chair")]
    img_ids = tuple(sorted({a["image_id"] for a in chosen}))
    cat_ids = tuple(sorted({a["category_id"] for a in chosen}))
    for run, iou_type in (("lvis-box", "bbox"), ("lvis-mask", "segm")):
        result = lv.evaluate(con, run, iou_type=iou_type,
                             where="category_name IN ('person', 'car', 'dog', 'cup', 'chair')")
        assert 0 < result.n_images < 79 and result.n_categories == len(cat_ids)
        assert_same(result, oracle(lvis_warehouse, run, iou_type, img_ids, cat_ids))


def test_default_protocol(lvis_warehouse, con, mini_warehouse):
    assert lv.default_protocol(con, "lvis-box", None, "bbox") == "lvis"
    assert lv.default_protocol(con, "lvis-box", None, "keypoints") == "coco"
    c = connect(*mini_warehouse)
    try:
        assert not lv.is_lvis(c, "val2017")
    finally:
        c.close()


def test_cli_lvis_and_prediction_views(lvis_warehouse, tmp_path):
    """The real command, default protocol (lvis here), json output; then the error-analysis views."""
    root, dataset, _ = lvis_warehouse
    e = oracle(lvis_warehouse, "lvis-box-ties", "bbox")
    out = subprocess.run([sys.executable, "-m", "pipeline", "evaluate", "--run", "lvis-box-ties", "--warehouse",
                          root, "--dataset", dataset, "--format", "json"], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
    got = json.loads(out)
    assert got["protocol"] == "lvis" and list(got["stats"]) == list(e.results)
    np.testing.assert_allclose(list(got["stats"].values()), list(e.results.values()), atol=1e-4)
    table = subprocess.run([sys.executable, "-m", "pipeline", "evaluate", "--run", "lvis-box-ties", "--protocol",
                            "coco", "--no-save-matches", "--warehouse", root, "--dataset", dataset],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert "AR100" in table and "APr" not in table
    expected = {}
    for img in e.eval_imgs:
        if img is None or img["area_rng"] != e.params.area_rng[0]:
            continue
        for score, row, ig in zip(img["dt_scores"], img["dt_matches"].T, img["dt_ignore"].T):
            for t, (g, i) in enumerate(zip(row, ig)):
                key = (round(float(e.params.iou_thrs[t]), 2), "ignored" if i else "tp" if g else "fp")
                expected[key] = expected.get(key, 0) + 1
    c = connect(root, dataset)
    try:
        got = c.execute("SELECT iou_threshold, outcome, count(*) FROM prediction_matches "
                        "WHERE run = 'lvis-box-ties' AND outcome <> 'fn' GROUP BY ALL").fetchall()
        assert {(t, o): n for t, o, n in got} == expected
        fp = c.execute("SELECT sum(false_positives), sum(fp_duplicate + fp_localisation + fp_confusion + "
                       "fp_background) FROM prediction_false_positives WHERE run = 'lvis-box-ties' "
                       "AND iou_threshold = 0.5").fetchone()
        assert fp[0] == fp[1] == expected[(0.5, "fp")]
        fn = c.execute("SELECT count(*) FROM prediction_matches WHERE run = 'lvis-box-ties' AND outcome = 'fn' "
                       "AND iou_threshold = 0.5").fetchone()[0]
        n_gt = c.execute("SELECT count(*) FROM annotations WHERE split = 'val2017'").fetchone()[0]
        assert fn == n_gt - expected[(0.5, "tp")]
    finally:
        c.close()


def test_lvis_needs_bbox_or_segm_and_frequencies(con, mini_warehouse):
    with pytest.raises(CocolakeError, match="bbox and segm"):
        lv.evaluate(con, "lvis-box", iou_type="keypoints")
    c = connect(*mini_warehouse)
    try:  # a COCO ground truth has no frequency: a one-line error, not a traceback
        with pytest.raises(CocolakeError, match=r"val2017: categories \[1, 2, 3, 4, 5\] have no frequency"):
            lv.evaluate(c, "any", split="val2017")
    finally:
        c.close()


def test_report_curves_of_an_lvis_run_are_lvis_eval_ones(lvis_warehouse, con):
    from pipeline.report.runs import run_curves

    got = run_curves(con, "lvis-mask", "segm")
    e = oracle(lvis_warehouse, "lvis-mask", "segm")
    assert list(got["stats"]) == list(e.results)
    np.testing.assert_allclose(list(got["stats"].values()), list(e.results.values()), atol=1e-4)


def test_malformed_federated_lists_are_one_line_errors(coco_mini, tmp_path):
    gt = lvis_ground_truth(json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text()),
                           np.random.default_rng(3))
    gt["images"][5]["not_exhaustive_category_ids"] = "dog"
    (tmp_path / "instances_val2017.json").write_text(json.dumps(gt))
    run_ingest([str(tmp_path / "instances_val2017.json")], warehouse=str(tmp_path / "wh"), dataset="bad", workers=1)
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(make_results(gt, "bbox", 1, False)))
    run_ingest_results(str(dets), run="r", warehouse=str(tmp_path / "wh"), dataset="bad")
    out = subprocess.run([sys.executable, "-m", "pipeline", "evaluate", "--run", "r", "--warehouse",
                          str(tmp_path / "wh"), "--dataset", "bad"], capture_output=True, text=True, cwd=tmp_path)
    image_id = gt["images"][5]["id"]
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"cocolake evaluate: error: val2017: image {image_id}: not_exhaustive_category_ids must be a list of "
        'category ids, not "dog"']

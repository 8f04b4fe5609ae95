"""The run sections of the HTML report: PR curves and AP per category as COCOeval computes
them, the false-positive breakdown and confusions as their views count them, samples with
the matches drawn, and the page renders in headless Chromium with every plot."""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.evaluate.detections import run_ingest_results
from pipeline.query.views import connect
from pipeline.report import runs
from tests.evaluate.test_metrics import make_results
from tests.report.test_dataset import PLOTS, RUN_PLOTS, _render_in_chromium

GT = "instances_val2017.json"


@pytest.fixture(scope="module")
def warehouse(mini_warehouse, coco_mini, tmp_path_factory):
    """coco-mini with runs: "box" evaluated (its match table stored); "fresh" (boxes) and "kp"
    (keypoints) not."""
    root, dataset = mini_warehouse
    tmp = tmp_path_factory.mktemp("runs")
    shutil.copytree(f"{root}/{dataset}", tmp / dataset)
    gt = json.loads((coco_mini / "annotations" / GT).read_text())
    kp_gt = json.loads((coco_mini / "annotations" / "person_keypoints_val2017.json").read_text())
    for run, seed, iou_type, truth in (("box", 11, "bbox", gt), ("fresh", 12, "bbox", gt),
                                       ("kp", 13, "keypoints", kp_gt)):
        (tmp / f"{run}.json").write_text(json.dumps(make_results(truth, iou_type, seed, False)))
        run_ingest_results(str(tmp / f"{run}.json"), run=run, warehouse=str(tmp), dataset=dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["evaluate", "--run", "box", "--warehouse", str(tmp), "--dataset", dataset]) == 0
    return str(tmp), dataset


@pytest.fixture(scope="module")
def page(warehouse, coco_mini, tmp_path_factory):
    """The report as a user writes it: the real command, default options but the image root."""
    out = tmp_path_factory.mktemp("run-report")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "pipeline", "report", "--warehouse", warehouse[0],
                           "--dataset", warehouse[1], "--out", str(out), "--image-root", str(coco_mini)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {out / 'index.html'}"
    return out / "index.html"


@pytest.fixture(scope="module")
def oracle(warehouse, coco_mini):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_mini / "annotations" / GT))
        e = COCOeval(gt, gt.loadRes(json.loads(open(f"{warehouse[0]}/box.json").read())), "bbox")
        e.evaluate()
        e.accumulate()
    return e, gt


def _run_html(page, run: str) -> str:
    text = page.read_text()
    start = text.index(f'<section class="run" data-run="{run}" data-split="val2017">')
    return text[start:text.index("</section>", start)]


def _defined_mean(s: np.ndarray, axis) -> np.ndarray:
    return np.array([r[r > -1].mean() if (r > -1).any() else -1 for r in np.moveaxis(s, axis, 0).reshape(s.shape[axis], -1)])


def test_pr_curves_and_ap_match_cocoeval(warehouse, oracle):
    e, gt = oracle
    p = e.eval["precision"][:, :, :, 0, 2]  # [T, R, K], area all, maxDets 100
    with connect(*warehouse) as con:
        got = runs.run_curves(con, "box", "bbox")
    np.testing.assert_allclose(got["recall"], e.params.recThrs)
    np.testing.assert_allclose(got["overall"]["IoU 0.50"], _defined_mean(p[0], 0), atol=1e-12)
    np.testing.assert_allclose(got["overall"]["IoU 0.50:0.95"], _defined_mean(np.moveaxis(p, 1, 0), 0), atol=1e-12)
    # AP per category, best first, against COCOeval's precision of each category
    want = []
    for k, cid in enumerate(e.params.catIds):
        s = p[:, :, k]
        if (s > -1).any():
            want.append((-float(s[s > -1].mean()), gt.cats[int(cid)]["name"], k))
    want.sort()
    assert 0 < len(want) < len(e.params.catIds)  # coco-mini's val2017 lacks some categories: left out
    assert [(c["category_name"], round(c["AP"], 12)) for c in got["categories"]] == [
        (name, round(-ap, 12)) for ap, name, _ in want]
    for cat, (_, _, k) in zip(got["categories"], want):
        np.testing.assert_allclose(cat["curves"]["IoU 0.50"], p[0, :, k], atol=1e-12)
        np.testing.assert_allclose(cat["curves"]["IoU 0.50:0.95"], _defined_mean(p[:, :, k], 1), atol=1e-12)


def test_page_shows_the_oracle_numbers(page, oracle):
    e, gt = oracle
    p = e.eval["precision"][:, :, :, 0, 2]
    section = _run_html(page, "box")
    bars = re.findall(r"<title>([^<]+) AP: ([0-9.]+)</title>", section)
    aps = {gt.cats[int(cid)]["name"]: float(p[:, :, k][p[:, :, k] > -1].mean())
           for k, cid in enumerate(e.params.catIds) if (p[:, :, k] > -1).any()}
    assert [html.unescape(n) for n, _ in bars] == sorted(aps, key=lambda n: (-aps[n], n))
    assert all(abs(float(v) - aps[html.unescape(n)]) < 5e-5 for n, v in bars)
    assert len(re.findall(r'data-plot="pr-category"', section)) == len(aps)
    overall = float(p[p > -1].mean())
    assert f"AP {overall:.3f}," in section


def test_fp_breakdown_and_confusions_match_the_views(page, warehouse):
    section = _run_html(page, "box")
    with connect(*warehouse) as con:
        fp = con.execute("SELECT sum(fp_duplicate), sum(fp_localisation), sum(fp_confusion), sum(fp_background), "
                         "sum(false_positives) FROM prediction_false_positives "
                         "WHERE run = 'box' AND iou_type = 'bbox' AND iou_threshold = 0.5").fetchone()
        top = con.execute("SELECT predicted_category, true_category, sum(detections) AS n FROM prediction_confusions "
                          "WHERE run = 'box' AND iou_threshold = 0.5 GROUP BY ALL "
                          "ORDER BY n DESC, predicted_category, true_category LIMIT 15").fetchall()
    assert sum(fp[:4]) == fp[4] > 0 and all(n > 0 for n in fp[:4])
    for cause, n in zip(runs.FP_CAUSES, fp):
        assert f"<title>{cause} false positives: {n:,}</title>" in section
    assert f"{fp[4]:,} false positives" in section
    assert top
    got = re.findall(r"<title>([^<]+) detected on ([^<]+): ([0-9,]+)</title>", section)
    assert [(html.unescape(a), html.unescape(b), int(n.replace(",", ""))) for a, b, n in got] == top


def test_samples_draw_the_matches_on_the_images(page):
    section = _run_html(page, "box")
    figures = re.findall(r'<figure class="match-sample"><img src="data:image/jpeg;base64,([^"]+)"', section)
    assert len(figures) == 12  # the default --samples
    assert "image file not available" not in section
    from PIL import Image
    import base64

    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(figures[0]))).convert("RGB")).astype(int)
    for color in (runs.TP, runs.FP, runs.FN):  # the three colours are drawn (JPEG: close, not exact)
        assert (np.abs(img - np.array(color)).sum(axis=2) < 60).sum() > 50, color


def test_run_without_match_table_names_the_command(page):
    section = _run_html(page, "fresh")
    assert "<code>cocolake evaluate --run fresh --iou-type bbox</code>" in section
    assert {"pr-overall", "pr-category", "ap-per-category"} <= set(re.findall(r'data-plot="([^"]+)"', section))
    assert "fp-breakdown" not in section and "match-sample" not in section


def test_keypoint_run_is_scored_by_oks(page, warehouse, coco_mini):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_mini / "annotations" / "person_keypoints_val2017.json"))
        e = COCOeval(gt, gt.loadRes(json.loads(open(f"{warehouse[0]}/kp.json").read())), "keypoints")
        e.evaluate()
        e.accumulate()
        e.summarize()
    section = _run_html(page, "kp")
    assert f"keypoints: AP {e.stats[0]:.3f}, AP50 {e.stats[1]:.3f}" in section
    assert "<code>cocolake evaluate --run kp --iou-type keypoints</code>" in section


def test_without_image_root_matches_on_grey(warehouse, tmp_path):
    from pipeline.report import write_report

    text = write_report(*warehouse, str(tmp_path), samples=2).read_text()
    assert _run_html(tmp_path / "index.html", "box").count("image file not available: boxes on grey") == 2
    assert text.count('class="match-sample"') == 2


@pytest.mark.slow
def test_run_report_renders_in_headless_chromium(page, tmp_path):
    shown = _render_in_chromium(page, tmp_path)
    assert {p["name"] for p in shown["plots"]} == PLOTS | RUN_PLOTS
    for plot in shown["plots"]:
        if plot["name"].startswith("pr-"):
            assert plot["width"] > 200 and plot["height"] > 100 and plot["curves"] >= 1, plot
        elif plot["name"] in RUN_PLOTS:  # bar charts: one bar per row (the keypoint run has one category)
            assert plot["width"] > 200 and plot["height"] > 30 and plot["marks"] >= 1, plot
        else:
            assert plot["width"] > 200 and plot["height"] > 100 and plot["marks"] >= 5, plot
    assert sum(p["name"] == "fp-breakdown" and p["marks"] == 4 for p in shown["plots"]) == 1
    assert sum(p["name"] == "pr-overall" for p in shown["plots"]) == 3
    assert len(shown["images"]) == 12 + 12
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in shown["images"]), shown["images"]

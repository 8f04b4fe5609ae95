"""report.runs: one section per model run of the warehouse (the ``predictions`` table).

PR curves (overall and per category, IoU 0.50 and the mean over 0.50:0.95) and AP per
category come from ``evaluate`` on the run's whole split, as COCOeval computes them. The
false-positive breakdown, the top confusions and the sample images read the match table
that ``cocolake evaluate`` stores (``prediction_false_positives``, ``prediction_confusions``,
``prediction_matches``); a run without one gets the command that stores it.
"""

from __future__ import annotations

import base64
import io
import logging

import numpy as np

from ..errors import CocolakeError
from ..evaluate import evaluate, lvis
from .dataset import SPLIT_COLORS, esc, fetch_rows, fmt_num, svg, thumbnail

log = logging.getLogger(__name__)

TP, FP, FN = (44, 160, 44), (214, 39, 40), (31, 119, 180)
CURVES = {"IoU 0.50": SPLIT_COLORS[0], "IoU 0.50:0.95": SPLIT_COLORS[1]}
FP_CAUSES = ("duplicate", "localisation", "confusion", "background")
THRESHOLD = 0.5


def mean_curve(precision: np.ndarray) -> list[float]:
    """Precision per recall threshold of an [..., R, K] slice of COCOeval's ``precision``: the
    mean over everything but the recall axis where defined (> -1), -1 where nothing is."""
    s = np.moveaxis(precision, -2, 0).reshape(precision.shape[-2], -1)
    return [float(row[row > -1].mean()) if (row > -1).any() else -1.0 for row in s]


def run_curves(con, run: str, iou_type: str, split: str | None = None) -> dict:
    """The PR curves and AP per category of ``run`` (area "all", most detections), best AP first."""
    lvis_run = lvis.default_protocol(con, run, split, iou_type) == "lvis"  # as `cocolake evaluate` chooses
    r = (lvis.evaluate if lvis_run else evaluate)(con, run, iou_type=iou_type, split=split)
    t50 = int(np.flatnonzero(np.isclose(r.params.iou_thrs, 0.5))[0])
    p = r.precision[:, :, :, 0, -1]  # [T, R, K]
    cats = [dict(row, curves={"IoU 0.50": mean_curve(p[t50, :, k:k + 1]), "IoU 0.50:0.95": mean_curve(p[:, :, k:k + 1])})
            for k, row in enumerate(r.per_category()) if row["gt"] > 0]
    return {"split": r.split, "recall": r.params.rec_thrs.tolist(),
            "overall": {"IoU 0.50": mean_curve(p[t50]), "IoU 0.50:0.95": mean_curve(p)},
            "categories": sorted(cats, key=lambda c: (-c["AP"], str(c["category_name"]))),
            "stats": r.summary(), "images": r.n_images}


# ------------------------------------------------------------------ plots
def pr_chart(name: str, label: str, recall: list[float], curves: dict[str, list[float]], *, small: bool = False,
             title: str = "") -> str:
    """Precision (y) over recall (x), one polyline per curve; undefined points (-1) left out."""
    left, top, w, h = (34, 22, 180, 110) if small else (50, 30, 360, 260)
    body = [f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#bbb"/>']
    for t in (0.0, 0.5, 1.0) if small else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        x, y = left + t * w, top + h - t * h
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" stroke="#eee"/>'
                    f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>'
                    f'<text x="{x:.1f}" y="{top + h + 12}" text-anchor="middle">{t:g}</text>')
    for k, (cname, values) in enumerate(curves.items()):
        pts = " ".join(f"{left + r * w:.1f},{top + h - v * h:.1f}" for r, v in zip(recall, values) if v >= 0)
        if pts:
            body.append(f'<polyline class="pr" data-curve="{esc(cname)}" points="{pts}" fill="none" '
                        f'stroke="{CURVES[cname]}" stroke-width="{1.5 if small else 2}">'
                        f'<title>{esc(title or label)}, {esc(cname)}</title></polyline>')
        if not small:
            body.append(f'<rect x="{left + w + 12}" y="{top + 14 * k}" width="10" height="10" fill="{CURVES[cname]}"/>'
                        f'<text x="{left + w + 26}" y="{top + 9 + 14 * k}">{esc(cname)}</text>')
    body.append(f'<text x="{left}" y="{top - 8}">{esc(title)}</text>' if title else
                f'<text x="{left + w / 2}" y="{top + h + 26}" text-anchor="middle">recall</text>')
    return svg(name, label, left + w + (10 if small else 130), top + h + (18 if small else 34), body)


def value_bars(name: str, label: str, rows: list[tuple[str, float, str]], color: str, digits: int = 4) -> str:
    """Horizontal bars with their value printed: (label, value, tooltip)."""
    left, bar_w, top = 170, 460, 10
    row_h = max(14, min(24, 200 // max(len(rows), 1)))  # few bars: thicker ones
    peak = max((v for _, v, _ in rows), default=0) or 1
    body = []
    for i, (row, v, tip) in enumerate(rows):
        y = top + i * row_h
        text = f"{v:.{digits}f}" if digits else fmt_num(v)
        body.append(f'<text x="{left - 6}" y="{y + row_h - 4}" text-anchor="end">{esc(row)}</text>'
                    f'<rect x="{left}" y="{y + 1}" width="{max(v, 0) / peak * bar_w:.1f}" height="{row_h - 2}" '
                    f'fill="{color}"><title>{esc(tip)}: {text}</title></rect>'
                    f'<text x="{left + max(v, 0) / peak * bar_w + 4:.1f}" y="{y + row_h - 4}">{text}</text>')
    return svg(name, label, left + bar_w + 60, top + row_h * len(rows) + 10, body)


# ------------------------------------------------------------------ sections
def runs_of(con) -> list[dict]:
    """Each run and split with its detections and the IoU types its match table holds."""
    return fetch_rows(con, """
        WITH p AS (SELECT run, split, count(*) AS detections, bool_and(keypoints IS NOT NULL) AS keypoints
                   FROM predictions GROUP BY run, split),
             m AS (SELECT run, split, list(DISTINCT iou_type ORDER BY iou_type) AS matched
                   FROM prediction_matches GROUP BY run, split)
        SELECT p.*, coalesce(m.matched, []) AS matched FROM p LEFT JOIN m USING (run, split) ORDER BY run, split""")


def run_sections(con, image_root: str | None, samples: int) -> list[str]:
    out = []
    for run in runs_of(con):
        matched = list(run["matched"])
        iou_type = "bbox" if "bbox" in matched or not (matched or run["keypoints"]) else (
            matched[0] if matched else "keypoints")
        out.append(run_section(con, run, iou_type, image_root, samples))
    return out


def run_section(con, run: dict, iou_type: str, image_root: str | None, samples: int) -> str:
    name, split = run["run"], run["split"]
    head = f'<section class="run" data-run="{esc(name)}" data-split="{esc(split)}"><h2>Run {esc(name)} on {esc(split)}</h2>'
    try:
        c = run_curves(con, name, iou_type, split)
    except CocolakeError as err:  # e.g. keypoints without a sigma per joint: the rest of the page still renders
        log.warning("report: run %s on %s: %s", name, split, err)
        return f"{head}<p>Not scored: {esc(err)}</p></section>"
    stats = ", ".join(f"{k} {v:.3f}" for k, v in c["stats"].items()
                      if k in ("AP", "AP50", "AP75", "AR", "AR100", "AR@300"))
    parts = [f'{head}<p>{fmt_num(run["detections"])} detections on {esc(c["split"])} ({c["images"]} images), '
             f'{esc(iou_type)}: {esc(stats)}.</p>',
             "<h3>Precision and recall</h3><p>Precision at COCO's 101 recall thresholds (area all, 100 detections "
             "per image), the mean over the categories with ground truth.</p>",
             pr_chart("pr-overall", f"PR curve of run {name}", c["recall"], c["overall"])]
    parts.append('<div class="small-multiples">' + "".join(
        pr_chart("pr-category", f"PR curve of {cat['category_name']}", c["recall"], cat["curves"], small=True,
                 title=f"{cat['category_name']} (AP {cat['AP']:.3f})") for cat in c["categories"]) + "</div>")
    parts.append("<h3>AP per category</h3><p>AP over IoU 0.50:0.95, best first.</p>" + value_bars(
        "ap-per-category", f"AP per category of run {name}",
        [(str(cat["category_name"]), cat["AP"], f"{cat['category_name']} AP") for cat in c["categories"]],
        SPLIT_COLORS[0]))
    if iou_type not in run["matched"]:
        parts.append(f"<h3>False positives</h3><p>No match table for this run yet: <code>cocolake evaluate --run "
                     f"{esc(name)} --iou-type {esc(iou_type)}</code> stores it, and the next report shows the "
                     "false positives by cause, the top confusions and sample images with their matches.</p>")
    else:
        parts += [fp_section(con, name, split, iou_type), confusion_section(con, name, split, iou_type)]
        if samples > 0:
            parts.append(match_samples(con, name, split, iou_type, image_root, samples))
    return "".join(parts) + "</section>"


def fp_section(con, run: str, split: str, iou_type: str) -> str:
    rows = fetch_rows(con, """
        SELECT sum(true_positives) AS tp, sum(false_positives) AS fp, sum(misses) AS fn,
               sum(fp_duplicate) AS duplicate, sum(fp_localisation) AS localisation,
               sum(fp_confusion) AS confusion, sum(fp_background) AS background
        FROM prediction_false_positives WHERE run = $1 AND split = $2 AND iou_type = $3 AND iou_threshold = $4""",
                      [run, split, iou_type, THRESHOLD])[0]
    bars = value_bars("fp-breakdown", f"False positives of run {run} by cause",
                      [(cause, float(rows[cause] or 0), f"{cause} false positives") for cause in FP_CAUSES],
                      SPLIT_COLORS[3], digits=0)
    return (f"<h3>False positives</h3><p>At IoU {THRESHOLD:.2f}: {fmt_num(rows['tp'] or 0)} true positives, "
            f"{fmt_num(rows['fp'] or 0)} false positives, {fmt_num(rows['fn'] or 0)} misses. A false positive is a "
            "duplicate (a higher-scored detection took its ground truth), a localisation error (same category, "
            "0.1 &le; IoU &lt; 0.50), a confusion (overlaps another category by IoU &ge; 0.1) or background.</p>"
            + bars)


def confusion_section(con, run: str, split: str, iou_type: str, top: int = 15) -> str:
    rows = fetch_rows(con, """
        SELECT predicted_category, true_category, sum(detections) AS n
        FROM prediction_confusions WHERE run = $1 AND split = $2 AND iou_type = $3 AND iou_threshold = $4
        GROUP BY ALL ORDER BY n DESC, predicted_category, true_category LIMIT $5""",
                      [run, split, iou_type, THRESHOLD, top])
    if not rows:
        return f"<h3>Top confusions</h3><p>No detection at IoU {THRESHOLD:.2f} took another category's object.</p>"
    bars = value_bars("confusions", f"Top confusions of run {run}",
                      [(f"{r['predicted_category']} for {r['true_category']}", float(r["n"]),
                        f"{r['predicted_category']} detected on {r['true_category']}") for r in rows],
                      SPLIT_COLORS[5], digits=0)
    return (f"<h3>Top confusions</h3><p>False positives that overlap a ground truth of another category by IoU "
            f"&ge; {THRESHOLD:.2f} (predicted for true), most first.</p>" + bars)


def match_samples(con, run: str, split: str, iou_type: str, image_root: str | None, count: int) -> str:
    images = fetch_rows(con, """
        SELECT s.split, s.image_id, s.file_name, s.true_positives, s.false_positives, s.misses,
               i.width, i.height, i.coco_url
        FROM prediction_image_scores AS s JOIN images AS i ON i.split = s.split AND i.id = s.image_id
        WHERE s.run = $1 AND s.split = $2 AND s.iou_type = $3 AND s.iou_threshold = $4 AND i.width > 0 AND i.height > 0
        ORDER BY s.false_positives DESC, s.misses DESC, s.image_id LIMIT $5""", [run, split, iou_type, THRESHOLD, count])
    figures = []
    for row in images:
        uri, found = draw_matches(con, run, iou_type, row, image_root)
        note = "" if found else " · image file not available: boxes on grey"
        figures.append(f'<figure class="match-sample"><img src="{uri}" alt="{esc(row["file_name"])} with the '
                       f'matches of run {esc(run)}"><figcaption>{esc(row["split"])}/{esc(row["file_name"])} · '
                       f'{row["true_positives"]} TP, {row["false_positives"]} FP, {row["misses"]} missed'
                       f'{esc(note)}</figcaption></figure>')
    return (f"<h3>Samples</h3><p>The images with the most false positives at IoU {THRESHOLD:.2f}: true positives "
            "in green, false positives in red, missed ground truth in blue.</p>"
            f'<div class="grid">{"".join(figures)}</div>')


def draw_matches(con, run: str, iou_type: str, row: dict, image_root: str | None, thumb: int = 360):
    """A JPEG data: URI of the image (or a grey canvas) with the run's matches drawn; found or not."""
    from PIL import ImageDraw

    img, scale, found = thumbnail(row, image_root, thumb)
    boxes = fetch_rows(con, """
        SELECT m.outcome, coalesce(p.bbox, a.bbox) AS bbox, m.category_name, m.score
        FROM prediction_matches AS m
        LEFT JOIN predictions AS p ON m.outcome <> 'fn' AND p.run = m.run AND p.id = m.prediction_id
        LEFT JOIN annotations AS a ON m.outcome = 'fn' AND a.split = m.split AND a.id = m.gt_id
        WHERE m.run = $1 AND m.iou_type = $2 AND m.iou_threshold = $3 AND m.split = $4 AND m.image_id = $5
              AND m.outcome IN ('tp', 'fp', 'fn')
        ORDER BY m.outcome, m.score DESC NULLS LAST, m.prediction_id, m.gt_id""",
                      [run, iou_type, THRESHOLD, row["split"], row["image_id"]])
    draw = ImageDraw.Draw(img)
    for b in boxes:
        if not b["bbox"] or len(b["bbox"]) != 4 or None in b["bbox"]:
            continue
        x, y, bw, bh = (v * scale for v in b["bbox"])
        draw.rectangle([x, y, x + bw, y + bh], outline={"tp": TP, "fp": FP, "fn": FN}[b["outcome"]], width=2)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), found

"""LVIS evaluation: the federated protocol of the ``lvis`` package's ``LVISEval``.

Input: as ``metrics.evaluate``, on a ground truth with LVIS's fields (category ``frequency``
r/c/f, image ``neg_category_ids`` and ``not_exhaustive_category_ids``, kept by ingest in the
``extra`` JSON columns). Output: an ``Evaluation`` with ``protocol == "lvis"`` and LVISEval's
13 numbers (``LVIS_STAT_NAMES``).

The rules, as LVISResults and LVISEval apply them:

1. at most 300 detections per image, all categories together (the highest scores; ties
   in file order), cut before anything else, so also before ``where``;
2. a detection counts only where its category is verified in its image: it has a ground
   truth there (positive) or is in the image's ``neg_category_ids``; others are dropped;
3. an unmatched detection of a category in the image's ``not_exhaustive_category_ids`` is
   ignored (neither true nor false positive);
4. ``iscrowd`` plays no part: every ground truth counts and IoU is the plain one;
5. APr, APc, APf: AP (area "all") over the categories of each frequency.
Matching and accumulation are COCOeval's, which LVISEval follows (``metrics.compute``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ConfigError, EvaluationError
from . import load, metrics

PROTOCOLS = ("coco", "lvis")
MAX_DETS = 300
FREQUENCIES = ("r", "c", "f")
LVIS_STAT_NAMES = metrics.STAT_NAMES["lvis"]


def params_for(iou_type: str) -> metrics.Params:
    if iou_type not in ("bbox", "segm"):
        raise ConfigError(f"LVIS evaluation is for bbox and segm, not {iou_type!r}")
    p = metrics.params_for(iou_type)
    return dataclasses.replace(p, max_dets=(MAX_DETS,))


def is_lvis(con, split: str, gt_kind: str = "instances") -> bool:
    """LVIS-shaped: a category of the split's ground truth has ``frequency`` or an image ``neg_category_ids``."""
    row = con.execute(
        "SELECT (SELECT count(*) FROM raw_categories WHERE split = ? AND kind = ? "
        "        AND json_extract(extra, '$.frequency') IS NOT NULL) "
        "     + (SELECT count(*) FROM raw_images WHERE split = ? AND kind = ? "
        "        AND json_extract(extra, '$.neg_category_ids') IS NOT NULL)",
        [split, gt_kind, split, gt_kind]).fetchall()[0]
    return bool(row[0])


def default_protocol(con, run: str, split: str | None, iou_type: str) -> str:
    if iou_type == "keypoints":
        return "coco"
    return "lvis" if is_lvis(con, split or load.run_split(con, run)) else "coco"


def _verified(con, split: str, gt_kind: str, field: str, img_ids, cat_ids) -> np.ndarray:
    """image position * K + category position of the (image, category) pairs the images' ``field`` lists."""
    listed = f"FROM raw_images WHERE split = ? AND kind = ? AND json_extract(extra, '$.{field}') IS NOT NULL"
    bad = con.execute(f"SELECT id, json_extract(extra, '$.{field}')::VARCHAR {listed} "
                      f"AND TRY_CAST(json_extract(extra, '$.{field}') AS BIGINT[]) IS NULL LIMIT 1",
                      [split, gt_kind]).fetchall()
    if bad:
        raise EvaluationError(f"{split}: image {bad[0][0]}: {field} must be a list of category ids, "
                            f"not {bad[0][1][:60]}")
    rows = con.execute(f"SELECT id, unnest(CAST(json_extract(extra, '$.{field}') AS BIGINT[])) AS cat "
                       f"{listed}", [split, gt_kind]).fetchall()
    img, ok_i = _position([r[0] for r in rows], img_ids)
    cat, ok_c = _position([r[1] for r in rows], cat_ids)
    ok = ok_i & ok_c
    return img[ok] * len(cat_ids) + cat[ok]


def _frequencies(con, split: str, gt_kind: str, cat_ids) -> np.ndarray:
    rows = con.execute("SELECT id, any_value(json_extract_string(extra, '$.frequency')) AS f "
                       "FROM raw_categories WHERE split = ? AND kind = ? GROUP BY id", [split, gt_kind]).fetchall()
    pos, ok = _position([r[0] for r in rows], cat_ids)
    freq = np.full(len(cat_ids), "", object)
    freq[pos[ok]] = np.asarray([r[1] for r in rows], object)[ok]
    bad = [int(c) for c, f in zip(cat_ids.tolist(), freq) if f not in FREQUENCIES]
    if bad:
        raise EvaluationError(f"LVIS evaluation of {split}: categories {bad[:5]} have no frequency r, c or f")
    return freq


def _top_per_image(con, run: str, split: str) -> np.ndarray:
    """Ids of each image's ``MAX_DETS`` best detections (LVISResults.limit_dets_per_image)."""
    rows = con.execute("SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY image_id "
                       "ORDER BY score DESC, id) AS r FROM raw_predictions WHERE run = ? AND split = ?) "
                       "WHERE r <= ? ORDER BY id", [run, split, MAX_DETS]).fetchall()
    return np.asarray([r[0] for r in rows], np.int64)


def _position(values: list, universe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each value in the sorted ``universe`` and whether it is there."""
    values = np.asarray(values, dtype=universe.dtype if len(values) else np.int64)
    if not len(universe):
        return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(universe, values), len(universe) - 1)
    return pos, universe[pos] == values


def evaluate(con, run: str, *, iou_type: str = "bbox", where: str | None = None, split: str | None = None,
             gt_kind: str | None = None) -> metrics.Evaluation:
    """Evaluate run ``run`` as LVISEval would, on the images/categories ``where`` selects (all by default)."""
    params = params_for(iou_type)
    split = split or load.run_split(con, run)
    gt_kind = gt_kind or "instances"
    img_ids, cat_ids, names = load.select(con, split, gt_kind, where)
    freq = _frequencies(con, split, gt_kind, cat_ids)
    gt = load.load_ground_truth(con, split, gt_kind, iou_type, img_ids, cat_ids)
    gt.ignore = np.zeros(len(gt.ids), bool)
    gt.crowd = np.zeros(len(gt.ids), bool)
    dt = load.load_detections(con, run, split, iou_type, img_ids, cat_ids)
    K = len(cat_ids)
    key = dt.img * K + dt.cat
    positive = np.unique(gt.img * K + gt.cat)
    negative = _verified(con, split, gt_kind, "neg_category_ids", img_ids, cat_ids)
    keep = np.isin(dt.ids, _top_per_image(con, run, split)) & (np.isin(key, positive) | np.isin(key, negative))
    dt = dt.take(np.flatnonzero(keep))
    not_exhaustive = np.isin(dt.img * K + dt.cat,
                             _verified(con, split, gt_kind, "not_exhaustive_category_ids", img_ids, cat_ids))
    return metrics.compute(run, split, iou_type, where, params, img_ids, cat_ids, names, gt, dt,
                           ignore_unmatched=not_exhaustive, protocol="lvis",
                           summarize_with=lambda p, pr, rc: summarize(p, pr, rc, freq))


def summarize(params: metrics.Params, precision: np.ndarray, recall: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """LVISEval.summarize's 13 numbers from precision [T,R,K,A,1] and recall [T,K,A,1]."""

    def one(ap, iou_thr=None, area="all", group=None):
        a = params.area_lbl.index(area)
        s = precision[..., a, 0] if ap else recall[..., a, 0]
        if iou_thr is not None:
            s = s[np.where(iou_thr == params.iou_thrs)[0]]
        if group is not None:
            s = s[:, :, freq == group]
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    return np.array([one(1), one(1, .5), one(1, .75), one(1, area="small"), one(1, area="medium"),
                     one(1, area="large"), one(1, group="r"), one(1, group="c"), one(1, group="f"),
                     one(0), one(0, area="small"), one(0, area="medium"), one(0, area="large")])

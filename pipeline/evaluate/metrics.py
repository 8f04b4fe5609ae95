"""evaluate: COCO metrics of a run on a split, or on the subset a SQL predicate selects.

Input: a DuckDB connection from ``views.connect``, a run (``cocolake ingest-results``), an
IoU type (bbox | segm | keypoints) and optionally a predicate over ``annotations_enriched``.
Output: an ``Evaluation``: the 12 COCO numbers (10 for keypoints), COCOeval's
``precision`` [T, R, K, A, M] and ``recall`` [T, K, A, M] arrays, AP per category, and the
match of every detection at every IoU threshold (``prediction_matches``).

Guarantee: the numbers equal pycocotools' ``COCOeval`` (evaluate, accumulate, summarize)
on the same ground-truth file and results, with ``params.imgIds``/``catIds`` set to the
images and categories of the annotations the predicate selects. Ties are broken as
COCOeval breaks them (stable sorts by score: file order within an image, then image id).

How, without COCOeval's Python loops over images x categories x area ranges:

1. detections are ranked by score within their (image, category) and cut at maxDets;
2. IoU of every detection with every ground truth of its image: boxes in NumPy (the
   formula of pycocotools' ``bbIou``), masks with ``masks.iou`` (pycocotools' C ``rleIou``)
   one call per image, keypoints' OKS in NumPy;
3. greedy matching only looks at pairs with IoU >= 0.5; it runs in rounds, round r taking
   the detection of rank r of every (image, category) at once, for all 10 thresholds: each
   takes the first available ground truth in COCOeval's order of preference (not ignored,
   then higher IoU, then later in the file);
4. accumulation: one sort by (category, -score, image, rank); recall only moves at true
   positives, so the interpolated precision at each of the 101 recall thresholds is read
   at the first true positive that reaches it (a count computed once per category).
"""

from __future__ import annotations

import dataclasses
import logging

import duckdb
import numpy as np
import pyarrow as pa

from .. import masks
from ..errors import ConfigError, EvaluationError, QueryError
from ..query.sandbox import check_single_select, short_error

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm", "keypoints")
# pycocotools' per-joint OKS constants for the 17 COCO person keypoints
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
_PAIR_BATCH = 1 << 20  # detection x ground-truth pairs per IoU batch (bounds the temporaries)


@dataclasses.dataclass(frozen=True)
class Params:
    """COCOeval's default parameters for one IoU type."""

    iou_type: str
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    max_dets: tuple[int, ...]
    area_rng: tuple[tuple[float, float], ...]
    area_lbl: tuple[str, ...]


def params_for(iou_type: str) -> Params:
    if iou_type not in IOU_TYPES:
        raise ConfigError(f"unknown IoU type {iou_type!r}; expected one of {', '.join(IOU_TYPES)}")
    # the same linspace calls as pycocotools, so thresholds compare equal bit for bit
    iou_thrs = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
    rec_thrs = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
    if iou_type == "keypoints":
        return Params(iou_type, iou_thrs, rec_thrs, (20,), ((0, 1e10), (32 ** 2, 96 ** 2), (96 ** 2, 1e10)),
                      ("all", "medium", "large"))
    return Params(iou_type, iou_thrs, rec_thrs, (1, 10, 100),
                  ((0, 1e10), (0, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e10)), ("all", "small", "medium", "large"))


STAT_NAMES = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
}
STAT_NAMES["segm"] = STAT_NAMES["bbox"]
STAT_NAMES["lvis"] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
                      "AR@300", "ARs@300", "ARm@300", "ARl@300")


@dataclasses.dataclass
class Objects:
    """Ground truths or detections as parallel arrays (ids and positions, not records)."""

    ids: np.ndarray  # annotation / detection ids
    img: np.ndarray  # position of the image in the sorted image ids
    cat: np.ndarray  # position of the category in the sorted category ids
    area: np.ndarray
    bbox: np.ndarray  # (n, 4)
    score: np.ndarray | None = None  # detections
    ignore: np.ndarray | None = None  # ground truths: crowd (or no visible keypoints)
    crowd: np.ndarray | None = None
    rle_counts: np.ndarray | None = None  # object array of str (segm)
    rle_size: np.ndarray | None = None  # (n, 2)
    keypoints: np.ndarray | None = None  # (n, 3k) (keypoints)

    def take(self, idx: np.ndarray) -> Objects:
        return Objects(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
                          for f in dataclasses.fields(self)})


@dataclasses.dataclass
class Evaluation:
    run: str
    split: str
    iou_type: str
    where: str | None
    params: Params
    img_ids: np.ndarray
    cat_ids: np.ndarray
    cat_names: list
    precision: np.ndarray  # [T, R, K, A, M], -1 where a category has no ground truth
    recall: np.ndarray  # [T, K, A, M]
    scores: np.ndarray  # [T, R, K, A, M]
    stats: np.ndarray
    n_gt: np.ndarray  # [K] ground truths that count (not ignored), area "all"
    n_dt: np.ndarray  # [K] detections evaluated (within maxDets)
    matching: dict = dataclasses.field(default_factory=dict, repr=False)
    protocol: str = "coco"  # or "lvis" (stats: lvis.LVIS_STAT_NAMES)

    @property
    def n_images(self) -> int:
        return len(self.img_ids)

    @property
    def n_categories(self) -> int:
        return len(self.cat_ids)

    def summary(self) -> dict[str, float]:
        names = STAT_NAMES["lvis" if self.protocol == "lvis" else self.iou_type]
        return {name: float(v) for name, v in zip(names, self.stats)}

    def per_category(self) -> list[dict]:
        """AP (0.50:0.95), AP50, AP75 and AR at maxDets, area "all", per category."""
        p = self.precision[:, :, :, 0, -1]
        r = self.recall[:, :, 0, -1]
        t50, t75 = (int(np.flatnonzero(np.isclose(self.params.iou_thrs, x))[0]) for x in (0.5, 0.75))
        rows = []
        for k, (cid, name) in enumerate(zip(self.cat_ids.tolist(), self.cat_names)):
            rows.append({"category_id": cid, "category_name": name, "gt": int(self.n_gt[k]),
                         "detections": int(self.n_dt[k]), "AP": _mean(p[:, :, k]), "AP50": _mean(p[t50, :, k]),
                         "AP75": _mean(p[t75, :, k]), "AR": _mean(r[:, k])})
        return rows

    def lines(self) -> list[str]:
        out = [f"run {self.run} on {self.split}, {self.iou_type}" + (" (LVIS)" if self.protocol == "lvis" else "")
               + f": {self.n_images} images, "
               f"{self.n_categories} categories" + (f", where {self.where}" if self.where else "")]
        width = max(6, *(len(name) for name in self.summary()))
        out += [f"  {name:<{width}} {v:7.4f}" for name, v in self.summary().items()]
        return out

    def per_category_lines(self) -> list[str]:
        rows = self.per_category()
        width = max([len(str(r["category_name"])) for r in rows] + [8])
        out = [f"  {'category':<{width}} {'gt':>6} {'dets':>7} {'AP':>7} {'AP50':>7} {'AP75':>7} {'AR':>7}"]
        for r in rows:  # -1: no ground truth of the category in the evaluated images
            out.append(f"  {str(r['category_name']):<{width}} {r['gt']:>6} {r['detections']:>7} "
                       + " ".join(f"{r[k]:7.4f}" if r[k] >= 0 else f"{'-':>7}" for k in ("AP", "AP50", "AP75", "AR")))
        return out


def _mean(s: np.ndarray) -> float:
    s = s[s > -1]
    return float(np.mean(s)) if s.size else -1.0


# ---------------------------------------------------------------------------- loading


def _fetch(con, sql: str, params: list) -> pa.Table:
    try:
        return con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as err:
        raise QueryError(f"{err}\nSQL: {sql}") from None


def _predicate(con, sql: str, params: list, what: str) -> pa.Table:
    """A query around a user's predicate: one SELECT statement or nothing runs; one-line errors."""
    check_single_select(sql, what)
    try:
        return con.sql(sql, params=params).to_arrow_table()
    except duckdb.Error as err:
        raise QueryError(f"{what}: {short_error(err)}") from None


def _ids(col) -> np.ndarray:
    arr = col.to_numpy(zero_copy_only=False)
    return arr.astype(np.int64) if arr.dtype.kind in "iuf" else arr.astype(object)


def _lists(col, width: int | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, width) float array of a list column and a mask of rows that have the list."""
    import pyarrow.compute as pc

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lens = pc.list_value_length(col).fill_null(-1).to_numpy(zero_copy_only=False)
    width = width or int(lens.max(initial=0))
    ok = lens == width
    out = np.zeros((n, max(width, 0)))
    if ok.any():
        out[ok] = pc.list_flatten(col.filter(pa.array(ok))).to_numpy(zero_copy_only=False).reshape(-1, width)
    return out, ok


def _position(values: np.ndarray, universe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.searchsorted(universe, values) if len(universe) else np.zeros(len(values), np.int64)
    pos_c = np.minimum(pos, max(len(universe) - 1, 0))
    found = (pos < len(universe)) & (universe[pos_c] == values) if len(universe) else np.zeros(len(values), bool)
    return pos_c, found


def run_split(con, run: str) -> str:
    rows = con.execute("SELECT DISTINCT split FROM raw_predictions WHERE run = ? ORDER BY 1", [run]).fetchall()
    if not rows:
        runs = [r[0] for r in con.execute("SELECT DISTINCT run FROM raw_predictions ORDER BY 1").fetchall()]
        raise EvaluationError(f"run {run!r} has no detections in this warehouse (runs: {', '.join(runs) or 'none'}); "
                            "ingest one with `cocolake ingest-results`")
    if len(rows) > 1:
        raise EvaluationError(f"run {run!r} has detections on several splits ({', '.join(r[0] for r in rows)}); "
                            "give --split")
    return rows[0][0]


def select(con, split: str, gt_kind: str, where: str | None) -> tuple[np.ndarray, np.ndarray, list]:
    """Sorted image ids and category ids (and names) to evaluate: the ground truth's, or the predicate's."""
    imgs = _ids(_fetch(con, "SELECT DISTINCT id FROM raw_images WHERE split = ? AND kind = ?",
                       [split, gt_kind]).column(0))
    cats = _fetch(con, "SELECT id, any_value(name) AS name FROM raw_categories WHERE split = ? AND kind = ? "
                  "GROUP BY id", [split, gt_kind])
    if len(imgs) == 0:
        kinds = [r[0] for r in con.execute("SELECT DISTINCT kind FROM raw_images WHERE split = ?", [split]).fetchall()]
        raise EvaluationError(f"split {split!r} has no {gt_kind} ground truth (files of kinds: "
                            f"{', '.join(kinds) or 'none'})")
    cat_ids, names = _ids(cats.column("id")), cats.column("name").to_pylist()
    order = np.argsort(cat_ids, kind="stable")
    cat_ids, names = cat_ids[order], [names[i] for i in order]
    img_ids = np.unique(imgs)
    if where is not None:
        sel = _predicate(con, "SELECT DISTINCT image_id, category_id FROM annotations_enriched "
                         f"WHERE split = ? AND ({where}\n)", [split], f"--where {where!r}")
        img_ids = np.intersect1d(img_ids, _ids(sel.column(0)))
        keep = np.isin(cat_ids, _ids(sel.column(1)))
        cat_ids, names = cat_ids[keep], [n for n, k in zip(names, keep) if k]
    return img_ids, cat_ids, names


def load_ground_truth(con, split: str, gt_kind: str, iou_type: str, img_ids, cat_ids) -> Objects:
    if iou_type == "keypoints":
        sql = ("SELECT a.id, a.image_id, a.category_id, a.iscrowd, a.area, a.bbox, a.mask_area, "
               "k.num_keypoints, k.keypoints FROM raw_annotations AS a LEFT JOIN raw_keypoints AS k "
               "ON k.split = a.split AND k.source_file = a.source_file AND k.annotation_id = a.id "
               "WHERE a.split = ? AND a.kind = ? ORDER BY a.source_file, a.record_index")
    else:
        sql = ("SELECT id, image_id, category_id, iscrowd, area, bbox, mask_area, rle_counts, rle_size "
               "FROM raw_annotations WHERE split = ? AND kind = ? ORDER BY source_file, record_index")
    t = _fetch(con, sql, [split, gt_kind])
    img, ok_i = _position(_ids(t.column("image_id")), img_ids)
    cat, ok_c = _position(_ids(t.column("category_id")), cat_ids)
    t = t.filter(pa.array(ok_i & ok_c))
    n = t.num_rows
    bbox, has_box = _lists(t.column("bbox"), 4, n)
    crowd = t.column("iscrowd").fill_null(0).to_numpy(zero_copy_only=False).astype(bool)
    area = t.column("area").to_numpy(zero_copy_only=False).astype(float)
    missing = np.isnan(area)
    if missing.any():  # COCOeval needs an area; fall back on the mask's, else the box's
        mask_area = t.column("mask_area").to_numpy(zero_copy_only=False).astype(float)
        area = np.where(missing, np.where(np.isnan(mask_area), bbox[:, 2] * bbox[:, 3], mask_area), area)
    gt = Objects(ids=_ids(t.column("id")), img=img[ok_i & ok_c], cat=cat[ok_i & ok_c], area=area, bbox=bbox,
                 ignore=crowd.copy(), crowd=crowd)
    if iou_type == "bbox" and not has_box.all():
        raise EvaluationError(f"{int((~has_box).sum())} ground-truth annotations of {split} have no bbox; "
                            "bbox evaluation needs one for each")
    if iou_type == "segm":
        counts = t.column("rle_counts")
        if counts.null_count:
            raise EvaluationError(f"{counts.null_count} ground-truth annotations of {split} have no mask; "
                                "segm evaluation needs one for each")
        gt.rle_counts = counts.to_numpy(zero_copy_only=False)
        gt.rle_size = _lists(t.column("rle_size"), 2, n)[0].astype(np.int64)
    if iou_type == "keypoints":
        kps, has = _lists(t.column("keypoints"), None, n)
        gt.keypoints = kps
        nk = t.column("num_keypoints").to_numpy(zero_copy_only=False).astype(float)
        visible = (kps[:, 2::3] > 0).sum(axis=1)
        nk = np.where(np.isnan(nk), visible, nk)
        gt.ignore = crowd | (nk == 0) | ~has
    return gt


def load_detections(con, run: str, split: str, iou_type: str, img_ids, cat_ids) -> Objects:
    t = _fetch(con, "SELECT id, image_id, category_id, score, area, bbox, rle_counts, rle_size, keypoints "
               "FROM raw_predictions WHERE run = ? AND split = ? ORDER BY id", [run, split])
    img, ok_i = _position(_ids(t.column("image_id")), img_ids)
    cat, ok_c = _position(_ids(t.column("category_id")), cat_ids)
    keep = ok_i & ok_c
    n = t.num_rows
    bbox, _ = _lists(t.column("bbox"), 4, n)
    dt = Objects(ids=_ids(t.column("id")), img=img, cat=cat, area=t.column("area").to_numpy(zero_copy_only=False),
                 bbox=bbox, score=t.column("score").to_numpy(zero_copy_only=False))
    if iou_type == "segm":
        dt.rle_counts = t.column("rle_counts").to_numpy(zero_copy_only=False)
        dt.rle_size = _lists(t.column("rle_size"), 2, n)[0].astype(np.int64)
        no_mask = np.flatnonzero(keep & np.asarray([c is None for c in dt.rle_counts], dtype=bool))
        if no_mask.size:
            _box_masks(con, split, dt, no_mask, img_ids)
    if iou_type == "keypoints":
        dt.keypoints, has = _lists(t.column("keypoints"), None, n)
        if (keep & ~has).any():
            log.warning("%d detections of run %s have no keypoints; left out", int((keep & ~has).sum()), run)
        keep &= has
    return dt.take(np.flatnonzero(keep))


def _box_masks(con, split: str, dt: Objects, rows: np.ndarray, img_ids) -> None:
    """As loadRes: a detection with a box and no mask is the polygon of its box."""
    sizes = _fetch(con, "SELECT id, any_value(height) AS h, any_value(width) AS w FROM raw_images "
                   "WHERE split = ? GROUP BY id", [split])
    pos, found = _position(_ids(sizes.column("id")), img_ids)
    h = np.zeros(len(img_ids), np.int64)
    w = np.zeros(len(img_ids), np.int64)
    h[pos[found]] = sizes.column("h").to_numpy(zero_copy_only=False)[found]
    w[pos[found]] = sizes.column("w").to_numpy(zero_copy_only=False)[found]
    x, y, bw, bh = dt.bbox[rows].T
    coords = np.stack([x, y, x, y + bh, x + bw, y + bh, x + bw, y], axis=1).ravel()
    parts = np.arange(len(rows) + 1, dtype=np.int64) * 8
    hh, ww = h[dt.img[rows]], w[dt.img[rows]]
    counts = masks.encode_polygons(coords, parts, np.arange(len(rows) + 1, dtype=np.int64), hh, ww)
    dt.rle_counts = dt.rle_counts.copy()
    dt.rle_counts[rows] = counts
    dt.rle_size[rows] = np.stack([hh, ww], axis=1)


# ---------------------------------------------------------------------------- IoU


def box_iou(dt_boxes: np.ndarray, gt_boxes: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired boxes [x, y, w, h], as pycocotools' ``bbIou`` (crowd: over the detection's area)."""
    iw = np.minimum(dt_boxes[:, 0] + dt_boxes[:, 2], gt_boxes[:, 0] + gt_boxes[:, 2]) - np.maximum(dt_boxes[:, 0], gt_boxes[:, 0])
    ih = np.minimum(dt_boxes[:, 1] + dt_boxes[:, 3], gt_boxes[:, 1] + gt_boxes[:, 3]) - np.maximum(dt_boxes[:, 1], gt_boxes[:, 1])
    inter = iw * ih
    da = dt_boxes[:, 2] * dt_boxes[:, 3]
    union = np.where(crowd, da, da + gt_boxes[:, 2] * gt_boxes[:, 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = inter / union
    return np.where((iw > 0) & (ih > 0), out, 0.0)


def oks(dt_kps: np.ndarray, gt_kps: np.ndarray, gt_boxes: np.ndarray, gt_area: np.ndarray, sigmas) -> np.ndarray:
    """Object keypoint similarity of paired keypoints, as COCOeval.computeOks."""
    var = (np.asarray(sigmas) * 2) ** 2
    xg, yg, vg = gt_kps[:, 0::3], gt_kps[:, 1::3], gt_kps[:, 2::3]
    xd, yd = dt_kps[:, 0::3], dt_kps[:, 1::3]
    vis = vg > 0
    k1 = vis.sum(axis=1)
    x0 = (gt_boxes[:, 0] - gt_boxes[:, 2])[:, None]
    x1 = (gt_boxes[:, 0] + gt_boxes[:, 2] * 2)[:, None]
    y0 = (gt_boxes[:, 1] - gt_boxes[:, 3])[:, None]
    y1 = (gt_boxes[:, 1] + gt_boxes[:, 3] * 2)[:, None]
    has = (k1 > 0)[:, None]
    dx = np.where(has, xd - xg, np.maximum(0, x0 - xd) + np.maximum(0, xd - x1))
    dy = np.where(has, yd - yg, np.maximum(0, y0 - yd) + np.maximum(0, yd - y1))
    e = (dx ** 2 + dy ** 2) / var / (gt_area[:, None] + np.spacing(1)) / 2
    terms = np.where(has & ~vis, 0.0, np.exp(-e))
    return terms.sum(axis=1) / np.where(k1 > 0, k1, xg.shape[1])


@dataclasses.dataclass
class Pairs:
    """Same-category pairs that can match (IoU >= the lowest threshold) and per-detection bests."""

    dt: np.ndarray
    gt: np.ndarray
    iou: np.ndarray
    best_gt: np.ndarray  # per detection: same-category gt with the highest IoU (-1: none)
    best_iou: np.ndarray
    other_gt: np.ndarray  # per detection: gt of another category with the highest IoU (-1: none)
    other_iou: np.ndarray


def pair_ious(dt: Objects, gt: Objects, n_img: int, iou_type: str, min_iou: float, sigmas=None) -> Pairs:
    """IoU of each detection with each ground truth of its image (detections sorted by image)."""
    n_dt = len(dt.ids)
    g_order = np.argsort(gt.img, kind="stable")
    g_bounds = np.searchsorted(gt.img[g_order], np.arange(n_img + 1))
    per_dt = (g_bounds[1:] - g_bounds[:-1])[dt.img]
    ends = np.cumsum(per_dt)
    keep_d, keep_g, keep_v = [], [], []
    best = np.full((2, n_dt), -1.0)
    best_g = np.full((2, n_dt), -1, np.int64)
    batch = _PAIR_BATCH // 32 if iou_type == "keypoints" else _PAIR_BATCH  # OKS holds (pairs, joints) arrays
    d0 = 0
    while d0 < n_dt:
        d1 = int(np.searchsorted(ends, (ends[d0 - 1] if d0 else 0) + batch, side="right"))
        d1 = max(d1, d0 + 1)
        while d1 < n_dt and dt.img[d1] == dt.img[d1 - 1]:
            d1 += 1  # a batch holds whole images
        cnt = per_dt[d0:d1]
        pd = np.repeat(np.arange(d0, d1), cnt)
        within = np.arange(len(pd)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        pg = g_order[np.repeat(g_bounds[dt.img[d0:d1]], cnt) + within]
        same = dt.cat[pd] == gt.cat[pg]
        if iou_type == "bbox":
            iou = box_iou(dt.bbox[pd], gt.bbox[pg], gt.crowd[pg])
        elif iou_type == "segm":
            iou = _mask_ious(dt, gt, d0, d1, g_order, g_bounds)
        else:
            iou = np.full(len(pd), -1.0)
            iou[same] = oks(dt.keypoints[pd[same]], gt.keypoints[pg[same]], gt.bbox[pg[same]], gt.area[pg[same]],
                            sigmas)
        cand = same & (iou >= min_iou)
        keep_d.append(pd[cand])
        keep_g.append(pg[cand])
        keep_v.append(iou[cand])
        for j, sel in enumerate((same, ~same)):
            v = np.where(sel & (iou > 0), iou, -1.0)
            if len(v):
                _segment_max(v, pd, pg, best[j], best_g[j])
        d0 = d1
    cat = lambda xs, dtype: np.concatenate(xs) if xs else np.zeros(0, dtype)  # noqa: E731
    return Pairs(cat(keep_d, np.int64), cat(keep_g, np.int64), cat(keep_v, float),
                 best_g[0], best[0], best_g[1], best[1])


def _segment_max(v, pd, pg, best, best_g) -> None:
    """Per detection (``pd`` sorted), the highest ``v`` and its gt, where it beats ``best``."""
    starts = np.flatnonzero(np.concatenate(([True], pd[1:] != pd[:-1])))
    mx = np.maximum.reduceat(v, starts)
    d = pd[starts]
    is_max = v == np.repeat(mx, np.diff(np.append(starts, len(v))))
    first = np.flatnonzero(is_max)
    first = first[np.concatenate(([True], pd[first][1:] != pd[first][:-1]))]
    better = mx > best[d]
    best[d[better]] = mx[better]
    best_g[d[better]] = pg[first][better]


def _mask_ious(dt: Objects, gt: Objects, d0: int, d1: int, g_order, g_bounds) -> np.ndarray:
    """Mask IoU of each detection in [d0, d1) with each ground truth of its image, one C call per image."""
    out = []
    cuts = np.flatnonzero(np.diff(dt.img[d0:d1])) + d0 + 1
    for d, e in zip(np.concatenate(([d0], cuts)).tolist(), np.concatenate((cuts, [d1])).tolist()):
        i = dt.img[d]
        g = g_order[g_bounds[i]:g_bounds[i + 1]]
        if len(g):
            m = masks.iou(dt.rle_counts[d:e], dt.rle_size[d:e], gt.rle_counts[g], gt.rle_size[g], gt.crowd[g])
            out.append(np.asarray(m, dtype=float).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0)


# ---------------------------------------------------------------------------- matching


def rank_detections(dt: Objects, n_cat: int, max_det: int) -> tuple[Objects, np.ndarray]:
    """Detections sorted by (image, category, -score, file order), cut at ``max_det`` each; and their rank."""
    group = dt.img.astype(np.int64) * n_cat + dt.cat
    order = np.lexsort((dt.ids, -dt.score, group))
    g = group[order]
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1]))) if len(g) else np.zeros(0, np.int64)
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.append(starts, len(g))))
    keep = rank < max_det
    return dt.take(order[keep]), rank[keep]


def match(pairs: Pairs, rank: np.ndarray, gt_ig: np.ndarray, crowd: np.ndarray, thrs: np.ndarray,
          n_dt: int, max_det: int):
    """COCOeval's greedy matching for one area range: (dt -> gt index or -1, its IoU, gt matched) per threshold."""
    T = len(thrs)
    thr = np.minimum(thrs, 1 - 1e-10)[:, None]
    gt_matched = np.zeros((T, len(gt_ig)), bool)
    dt_match = np.full((T, n_dt), -1, np.int64)
    dt_iou = np.zeros((T, n_dt))
    cd, cg, cv = pairs.dt, pairs.gt, pairs.iou
    order = np.lexsort((-cg, -cv, gt_ig[cg], cd, rank[cd]))
    cd, cg, cv = cd[order], cg[order], cv[order]
    bounds = np.searchsorted(rank[cd], np.arange(max_det + 1))
    for r in range(max_det):
        s, e = bounds[r], bounds[r + 1]
        if s == e:
            continue
        d, g, v = cd[s:e], cg[s:e], cv[s:e]
        seg = np.flatnonzero(np.concatenate(([True], d[1:] != d[:-1])))
        ok = (~gt_matched[:, g] | crowd[g]) & (v >= thr)
        pos = np.where(ok, np.arange(e - s), e - s)
        first = np.minimum.reduceat(pos, seg, axis=1)
        t_idx, s_idx = np.nonzero(first < e - s)
        p = first[t_idx, s_idx]
        gt_matched[t_idx, g[p]] = True
        dt_match[t_idx, d[p]] = g[p]
        dt_iou[t_idx, d[p]] = v[p]
    return dt_match, dt_iou, gt_matched


# ---------------------------------------------------------------------------- accumulate


def accumulate(params: Params, dt: Objects, rank: np.ndarray, matched: list, dt_ig: list,
               npig: np.ndarray, n_cat: int):
    """COCOeval.accumulate: precision [T,R,K,A,M], recall [T,K,A,M], scores [T,R,K,A,M].

    Only true positives move recall, and between two of them precision only falls, so the
    interpolated precision at a recall threshold is the best precision at the true
    positives from the first one that reaches it: everything is computed on the true
    positives of each (threshold, category), found in one pass over the sorted detections.
    """
    T, R, A, M = len(params.iou_thrs), len(params.rec_thrs), len(params.area_rng), len(params.max_dets)
    precision = -np.ones((T, R, n_cat, A, M))
    recall = -np.ones((T, n_cat, A, M))
    scores = -np.ones((T, R, n_cat, A, M))
    # COCOeval's order: by category, then score (stable: image order, then rank in the image)
    order = np.lexsort((rank, dt.img, -dt.score, dt.cat))
    rank_o = rank[order]
    for a in range(A):
        ks = np.flatnonzero(npig[:, a] > 0)
        need = _needed(npig[ks, a], params.rec_thrs)  # true positives that reach each recall threshold
        tp_all = (matched[a] & ~dt_ig[a])[:, order]
        counted_all = ~dt_ig[a][:, order]
        for m, max_det in enumerate(params.max_dets):
            cols = rank_o < max_det
            full = bool(cols.all())
            sel = order if full else order[cols]
            tp = tp_all if full else tp_all[:, cols]
            counted = counted_all if full else counted_all[:, cols]
            cat, score = dt.cat[sel], dt.score[sel]
            cb = np.searchsorted(cat, np.arange(n_cat + 1))
            nd = np.diff(cb)
            ccum = np.cumsum(counted, axis=1, dtype=np.int64)
            t_idx, pos = np.nonzero(tp)  # sorted by threshold, then position (so by category)
            k_of = cat[pos]
            first = cb[k_of]
            c = ccum[t_idx, pos] - np.where(first > 0, ccum[t_idx, np.maximum(first - 1, 0)], 0)
            grp = t_idx * n_cat + k_of
            gstart = np.searchsorted(grp, np.arange(T * n_cat + 1))
            ntp = np.diff(gstart).reshape(T, n_cat)
            j = np.arange(len(grp)) - gstart[grp] + 1
            pr = j / (c.astype(float) + np.spacing(1))  # COCOeval: tp / (fp + tp + eps)
            # best precision from each true positive on, within its (threshold, category): a
            # running max from the right, kept from crossing groups by offsets that grow leftwards
            off = 2.0 * (T * n_cat - grp)
            env = np.maximum.accumulate((pr + off)[::-1])[::-1] - off
            with np.errstate(divide="ignore", invalid="ignore"):
                recall[:, ks, a, m] = np.where(nd[ks] > 0, ntp[:, ks] / npig[ks, a].astype(float), 0.0)
            if not len(ks):
                continue
            g0 = gstart[:-1].reshape(T, n_cat)[:, ks][:, :, None]  # (T, k, 1)
            n_t = ntp[:, ks][:, :, None]
            idx = g0 + need[None] - 1
            hit = (need[None] >= 1) & (need[None] <= n_t)
            safe = np.clip(idx, 0, max(len(env) - 1, 0))
            q = np.where(hit, env[safe] if len(env) else 0.0, 0.0)
            ss = np.where(hit, score[pos[safe]] if len(env) else 0.0, 0.0)
            # recall threshold 0: the first detection of the category (any, if there is one)
            zero = (need[None] == 0) & (nd[ks] > 0)[None, :, None]
            best = np.where(n_t > 0, env[np.clip(g0, 0, max(len(env) - 1, 0))] if len(env) else 0.0, 0.0)
            q = np.where(zero, best, q)
            ss = np.where(zero, score[np.minimum(cb[ks], max(len(score) - 1, 0))][None, :, None]
                          if len(score) else 0.0, ss)
            precision[:, :, ks, a, m] = q.transpose(0, 2, 1)
            scores[:, :, ks, a, m] = ss.transpose(0, 2, 1)
    return precision, recall, scores


def _needed(npig: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """(K, R): the fewest true positives j with j / npig >= threshold, in COCOeval's float arithmetic."""
    n = npig.astype(float)[:, None]
    j = np.clip(np.ceil(rec_thrs[None, :] * n).astype(np.int64), 0, npig[:, None])
    for _ in range(4):  # the product may round either way: settle on the exact boundary
        j = np.minimum(j + (j / n < rec_thrs[None, :]), npig[:, None])
        j = j - ((j >= 1) & ((j - 1) / n >= rec_thrs[None, :]))
    return j


def summarize(params: Params, precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """COCOeval.summarize's numbers (12 for boxes and masks, 10 for keypoints)."""

    def one(ap, iou_thr=None, area="all", max_dets=100):
        a = params.area_lbl.index(area)
        m = params.max_dets.index(max_dets)
        s = precision if ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == params.iou_thrs)[0]]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        return _mean(s)

    if params.iou_type == "keypoints":
        return np.array([one(1, max_dets=20), one(1, .5, max_dets=20), one(1, .75, max_dets=20),
                         one(1, area="medium", max_dets=20), one(1, area="large", max_dets=20),
                         one(0, max_dets=20), one(0, .5, max_dets=20), one(0, .75, max_dets=20),
                         one(0, area="medium", max_dets=20), one(0, area="large", max_dets=20)])
    md = params.max_dets
    return np.array([one(1), one(1, .5, max_dets=md[2]), one(1, .75, max_dets=md[2]),
                     one(1, area="small", max_dets=md[2]), one(1, area="medium", max_dets=md[2]),
                     one(1, area="large", max_dets=md[2]), one(0, max_dets=md[0]), one(0, max_dets=md[1]),
                     one(0, max_dets=md[2]), one(0, area="small", max_dets=md[2]),
                     one(0, area="medium", max_dets=md[2]), one(0, area="large", max_dets=md[2])])


# ---------------------------------------------------------------------------- API


def evaluate(con, run: str, *, iou_type: str = "bbox", where: str | None = None, split: str | None = None,
             gt_kind: str | None = None, sigmas=None) -> Evaluation:
    """Evaluate run ``run`` as COCOeval would, on the images/categories ``where`` selects (all by default)."""
    params = params_for(iou_type)
    split = split or run_split(con, run)
    gt_kind = gt_kind or ("person_keypoints" if iou_type == "keypoints" else "instances")
    img_ids, cat_ids, names = select(con, split, gt_kind, where)
    gt = load_ground_truth(con, split, gt_kind, iou_type, img_ids, cat_ids)
    dt = load_detections(con, run, split, iou_type, img_ids, cat_ids)
    if iou_type == "keypoints":
        k = max(gt.keypoints.shape[1], dt.keypoints.shape[1]) // 3
        sigmas = COCO_SIGMAS if sigmas is None and k in (0, 17) else sigmas
        if sigmas is None or len(sigmas) != k:
            raise EvaluationError(f"keypoints have {k} joints; OKS needs a sigma per joint (COCO's are for 17): "
                                "pass sigmas")
    return compute(run, split, iou_type, where, params, img_ids, cat_ids, names, gt, dt, sigmas)


def compute(run, split, iou_type, where, params: Params, img_ids, cat_ids, names, gt: Objects, dt: Objects,
            sigmas=None, ignore_unmatched: np.ndarray | None = None, summarize_with=None,
            protocol: str = "coco") -> Evaluation:
    """Match, accumulate, summarize (COCOeval's, or ``summarize_with(params, precision, recall)``);
    ``ignore_unmatched`` (per detection): ignored when it matches no ground truth (LVIS)."""
    K, A = len(cat_ids), len(params.area_rng)
    max_det = params.max_dets[-1]
    if ignore_unmatched is not None:
        dt = dataclasses.replace(dt, ignore=np.asarray(ignore_unmatched, bool))
    dt, rank = rank_detections(dt, K, max_det)
    pairs = pair_ious(dt, gt, len(img_ids), iou_type, float(params.iou_thrs.min()), sigmas)
    n_dt = len(dt.ids)
    matched, dt_ig, npig = [], [], np.zeros((K, A), np.int64)
    keep: dict = {}
    for a, (lo, hi) in enumerate(params.area_rng):
        gt_ig = gt.ignore | (gt.area < lo) | (gt.area > hi)
        dm, di, gm = match(pairs, rank, gt_ig, gt.crowd, params.iou_thrs, n_dt, max_det)
        out = (dt.area < lo) | (dt.area > hi)
        if dt.ignore is not None:
            out = out | dt.ignore
        matched.append(dm >= 0)
        dt_ig.append(np.where(dm >= 0, gt_ig[np.maximum(dm, 0)], out[None, :]) if len(gt_ig)
                     else np.broadcast_to(out, dm.shape))
        npig[:, a] = np.bincount(gt.cat[~gt_ig], minlength=K)
        if a == 0:
            keep = {"dt_match": dm, "dt_iou": di, "gt_matched": gm, "gt_ig": gt_ig}
    precision, recall, scores = accumulate(params, dt, rank, matched, dt_ig, npig, K)
    result = Evaluation(run, split, iou_type, where, params, img_ids, cat_ids, names, precision, recall, scores,
                        (summarize_with or summarize)(params, precision, recall), npig[:, 0],
                        np.bincount(dt.cat, minlength=K), protocol=protocol)
    result.matching = dict(keep, gt=gt, dt=dt, rank=rank, pairs=pairs, dt_ig=dt_ig[0])
    return result


# ---------------------------------------------------------------------------- match table and curves


def match_tables(result: Evaluation, id_type: str = "int64"):
    """The ``prediction_matches`` rows of an evaluation, one Arrow table per IoU threshold (area "all")."""
    from ..schema import schema_for

    schema = schema_for("prediction_matches", id_type)
    m = result.matching
    gt, dt, pairs = m["gt"], m["dt"], m["pairs"]
    img_ids, cat_ids = result.img_ids, result.cat_ids
    n_dt = len(dt.ids)
    fixed = {
        "prediction_id": pa.array(dt.ids, pa.int64()),
        "image_id": _typed(img_ids[dt.img], schema.field("image_id").type),
        "category_id": _typed(cat_ids[dt.cat], schema.field("category_id").type),
        "score": pa.array(dt.score, pa.float64()),
        "rank": pa.array(m["rank"], pa.int32()),
        "best_gt_id": _ref(gt.ids, pairs.best_gt, schema.field("best_gt_id").type),
        "best_iou": pa.array(pairs.best_iou, pa.float64(), mask=pairs.best_gt < 0),
        "other_gt_id": _ref(gt.ids, pairs.other_gt, schema.field("other_gt_id").type),
        "other_category_id": _ref(cat_ids[gt.cat] if len(gt.ids) else cat_ids[:0], pairs.other_gt,
                                  schema.field("other_category_id").type),
        "other_iou": pa.array(pairs.other_iou, pa.float64(), mask=pairs.other_gt < 0),
    }
    for t, thr in enumerate(result.params.iou_thrs):
        dm, ig = m["dt_match"][t], m["dt_ig"][t]
        outcome = np.where(dm < 0, np.where(ig, "ignored", "fp"), np.where(ig, "ignored", "tp"))
        fn = np.flatnonzero(~m["gt_ig"] & ~m["gt_matched"][t])
        cols = dict(fixed)
        cols.update({
            "iou_type": pa.array([result.iou_type] * n_dt, pa.string()),
            "iou_threshold": pa.array(np.full(n_dt, round(float(thr), 2)), pa.float64()),
            "outcome": pa.array(outcome, pa.string()),
            "gt_id": _ref(gt.ids, dm, schema.field("gt_id").type),
            "iou": pa.array(m["dt_iou"][t], pa.float64(), mask=dm < 0),
            "split": pa.array([result.split] * n_dt, pa.string()),
        })
        dt_rows = pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema)
        fn_cols = {
            "iou_type": pa.array([result.iou_type] * len(fn), pa.string()),
            "iou_threshold": pa.array(np.full(len(fn), round(float(thr), 2)), pa.float64()),
            "outcome": pa.array(["fn"] * len(fn), pa.string()),
            "gt_id": _typed(gt.ids[fn], schema.field("gt_id").type),
            "image_id": _typed(img_ids[gt.img[fn]], schema.field("image_id").type),
            "category_id": _typed(cat_ids[gt.cat[fn]], schema.field("category_id").type),
            "split": pa.array([result.split] * len(fn), pa.string()),
        }
        gt_rows = pa.Table.from_arrays([fn_cols.get(f.name, pa.nulls(len(fn), f.type)) for f in schema],
                                       schema=schema)
        yield pa.concat_tables([dt_rows, gt_rows])


def _typed(values: np.ndarray, t: pa.DataType) -> pa.Array:
    return pa.array(values.tolist() if values.dtype == object else values, t)


def _ref(ids: np.ndarray, idx: np.ndarray, t: pa.DataType) -> pa.Array:
    """ids[idx], null where idx < 0."""
    if len(ids) == 0:
        return pa.nulls(len(idx), t)
    return pa.array((ids[np.maximum(idx, 0)]).tolist() if ids.dtype == object else ids[np.maximum(idx, 0)], t,
                    mask=idx < 0)


def save_matches(warehouse: str, dataset: str, result: Evaluation, storage_options: dict | None = None) -> int:
    """Store the match table of ``result`` as the run's ``prediction_matches`` for its IoU type; rows written."""
    from ..schema import schema_for
    from ..warehouse import Part, Warehouse, write_part

    wh = Warehouse(warehouse, dataset, storage_options)
    with wh.transaction() as txn:
        manifest = wh.require_manifest()
        id_type = manifest.id_types().text()
        rel = txn.part("prediction_matches", result.run, wh.next_part_number(result.run, manifest))
        source = f"evaluate-{result.iou_type}"
        rows = write_part(wh.fs, f"{wh.root}/{rel}", match_tables(result, id_type),
                          schema_for("prediction_matches", id_type))
        parts = [Part("prediction_matches", result.run, source, rel, rows, id_type)] if rows else []
        txn.commit(parts, {(result.run, source)}, [])
    return rows


def pr_curves(con, run: str, iou_type: str = "bbox", *, split: str | None = None, where: str | None = None) -> dict:
    """Precision at COCO's 101 recall thresholds (area "all", most detections), for plotting.

    ``overall`` maps "0.50", "0.75" and "0.50:0.95" to the mean over categories (and
    thresholds) at each recall; ``per_category`` holds each category's curves at 0.50 and 0.75.
    Values are -1 where no category has ground truth.
    """
    r = evaluate(con, run, iou_type=iou_type, split=split, where=where)
    p = r.precision[:, :, :, 0, -1]  # [T, R, K]
    t50, t75 = (int(np.flatnonzero(np.isclose(r.params.iou_thrs, x))[0]) for x in (0.5, 0.75))

    def mean_over(s: np.ndarray) -> list[float]:  # s: [..., R, K] -> per recall threshold
        s = np.moveaxis(s, -2, 0).reshape(s.shape[-2], -1)
        return [_mean(row) for row in s]

    return {
        "run": run, "split": r.split, "iou_type": iou_type, "where": where,
        "recall": r.params.rec_thrs.tolist(),
        "overall": {"0.50": mean_over(p[t50]), "0.75": mean_over(p[t75]), "0.50:0.95": mean_over(p)},
        "per_category": [
            {"category_id": row["category_id"], "category_name": row["category_name"], "AP": row["AP"],
             "precision": {"0.50": p[t50, :, k].tolist(), "0.75": p[t75, :, k].tolist()}}
            for k, row in enumerate(r.per_category())
        ],
    }

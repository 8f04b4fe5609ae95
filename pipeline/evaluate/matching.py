"""matching: COCOeval's IoU and greedy matching of detections to ground truths, vectorized.

Input: ground truths and detections as ``Objects`` (parallel arrays). Output: the pairs
that can match (``pair_ious``), each detection's rank (``rank_detections``) and its match
at every IoU threshold (``match``). Imports the core (``masks``, ``iou``) only.

1. IoU of every detection with every ground truth of its image: boxes with ``iou.box_iou``
   (pycocotools' ``bbIou``), masks with ``iou.rles_iou`` (its ``rleIou``) over the same
   pairs, each mask parsed once per batch, keypoints' OKS in NumPy;
2. greedy matching only looks at pairs with IoU >= 0.5; it runs in rounds, round r taking
   the detection of rank r of every (image, category) at once, for all 10 thresholds: each
   takes the first available ground truth in COCOeval's order of preference (not ignored,
   then higher IoU, then later in the file).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import masks
from ..iou import box_iou, rles_iou

# pycocotools' per-joint OKS constants for the 17 COCO person keypoints
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
_PAIR_BATCH = 1 << 20  # detection x ground-truth pairs per IoU batch (bounds the temporaries)
_MASK_CHARS = 1 << 18  # characters of detection masks parsed at once (a run takes at least one)


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
        pos = np.repeat(g_bounds[dt.img[d0:d1]], cnt) + within  # of the gt in g_order
        pg = g_order[pos]
        same = dt.cat[pd] == gt.cat[pg]
        if iou_type == "bbox":
            iou = box_iou(dt.bbox[pd], gt.bbox[pg], gt.crowd[pg])
        elif iou_type == "segm":
            iou = _mask_ious(dt, gt, d0, d1, pd, pos, g_order, g_bounds)
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


def _mask_ious(dt: Objects, gt: Objects, d0: int, d1: int, pd, pos, g_order, g_bounds) -> np.ndarray:
    """Mask IoU of the pairs (detection ``pd``, ground truth ``g_order[pos]``) of the detections
    [d0, d1), in groups of whole images of about ``_MASK_CHARS`` characters of detection
    masks: a group's detections and the ground truths of its images are parsed once each."""
    out = np.empty(len(pd))
    ends = np.cumsum(np.fromiter(map(len, dt.rle_counts[d0:d1]), np.int64, d1 - d0))
    s = d0
    while s < d1:
        e = max(d0 + int(np.searchsorted(ends, (ends[s - d0 - 1] if s > d0 else 0) + _MASK_CHARS)), s + 1)
        e = min(int(np.searchsorted(dt.img, dt.img[e - 1], side="right")), d1)  # whole images
        p0, p1 = np.searchsorted(pd, (s, e))
        lo, hi = g_bounds[dt.img[s]], g_bounds[dt.img[e - 1] + 1]
        if p1 > p0:
            d_rles = masks.parse_batch(dt.rle_counts[s:e], dt.rle_size[s:e], "dt mask")
            g = g_order[lo:hi]
            g_rles = masks.parse_batch(gt.rle_counts[g], gt.rle_size[g], "gt mask")
            out[p0:p1] = rles_iou(d_rles, g_rles, gt.crowd[g_order[pos[p0:p1]]], pd[p0:p1] - s, pos[p0:p1] - lo)
        s = e
    return out


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

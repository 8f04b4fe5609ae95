"""metrics: COCO metrics of a run on a split, or on the subset a SQL predicate selects.

Input: a DuckDB connection from ``views.connect``, a run (``cocolake ingest-results``), an
IoU type (bbox | segm | keypoints) and optionally a predicate over ``annotations_enriched``.
Output: an ``Evaluation``: the 12 COCO numbers (10 for keypoints), COCOeval's
``precision`` [T, R, K, A, M] and ``recall`` [T, K, A, M] arrays, AP per category, and the
matching that ``store`` turns into the ``prediction_matches`` table.

Guarantee: the numbers equal pycocotools' ``COCOeval`` (evaluate, accumulate, summarize)
on the same ground-truth file and results, with ``params.imgIds``/``catIds`` set to the
images and categories of the annotations the predicate selects. Ties are broken as
COCOeval breaks them (stable sorts by score: file order within an image, then image id).
Detections are ranked and matched by ``matching``, read by ``load``; accumulation is one
sort by (category, -score, image, rank): recall only moves at true positives, so the
interpolated precision at each of the 101 recall thresholds is read at the first true
positive that reaches it (a count computed once per category). Imports the core, ``load``
and ``matching``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ConfigError, EvaluationError
from .load import load_detections, load_ground_truth, run_split, select
from .matching import COCO_SIGMAS, Objects, match, pair_ious, rank_detections

IOU_TYPES = ("bbox", "segm", "keypoints")


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

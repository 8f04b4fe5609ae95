"""load: what an evaluation reads from the views: the run's split, the images and
categories a predicate selects, ground truths and detections as ``matching.Objects``.

Input: a DuckDB connection from ``views.connect``. Imports the core, ``query.sandbox``
(the user's predicate runs as one SELECT) and ``matching``.
"""

from __future__ import annotations

import logging

import duckdb
import numpy as np
import pyarrow as pa

from .. import masks
from ..errors import EvaluationError, QueryError
from ..query.sandbox import check_single_select, short_error
from .matching import Objects

log = logging.getLogger(__name__)


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

"""store: the match table of an evaluation, ``prediction_matches``, in the warehouse.

One row per detection and IoU threshold (tp, fp or ignored, with its ground truth and
IoU) plus one per missed ground truth (fn), area "all"; stored per run and IoU type,
replacing the previous table of that pair, through ``Warehouse.transaction``. Imports
the core and ``metrics``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..schema import schema_for
from ..warehouse import Part, Warehouse, write_part
from .metrics import Evaluation


def match_tables(result: Evaluation, id_type: str = "int64"):
    """The ``prediction_matches`` rows of an evaluation, one Arrow table per IoU threshold (area "all")."""
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

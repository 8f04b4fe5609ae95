"""flatten: parsed COCO records → Arrow tables in the warehouse schemas.

Input: the records of one chunk (``parse``) and a ``FileContext`` (which file, which kind,
the type of each id space, bad-record policy). Output: a ``Flat``: one Arrow table per
warehouse table the records feed, the rejected records, and for ``images`` the id →
(height, width) lookup that annotation chunks need.

Guarantees: rows keep the source order (``record_index``); every value the typed columns
cannot hold exactly goes to ``raw`` and every unknown key to ``extra`` (JSON text), so an
export writes the source back; a bad record raises ``BadRecordError`` naming file, record
and problem, or becomes a ``rejects`` row when the policy is ``skip``. Instances take a
fast path (whole-chunk checks) that hands any unusual chunk to the exact path; both give
the same rows. Masks are encoded by ``encode``; polygons and bboxes read from the bytes by
``parse.parse_with_geometry`` come in as flat arrays. Imports ``records``, ``encode``, ``parse``.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import BadFileError
from ..jsontext import dumps_text as _dumps
from .encode import KIND_CODE, MaskRows, bbox_array, bbox_values, classify_segmentation, encode_masks, gather_polygons
from .parse import Geometry
from .records import (
    EXACT, KNOWN_KEYS, NUMBER_TYPES, BadValue, Collector, FileContext, Flat, ImageSizes, arrow_table, check_id,
    check_keypoints, check_object, extra_text, is_bbox, is_exact_num, is_int, is_num, is_str, short, typed,
)

# ---------------------------------------------------------------------------- sections


def flatten_section(section: str, records: list, ctx: FileContext, sizes: ImageSizes | None = None,
                    first_index: int = 0, geometry: Geometry | None = None) -> Flat:
    """The records of one top-level section of a document: images, annotations, categories or
    licenses; ``geometry``: the annotations' polygons and bboxes read by ``parse.parse_with_geometry``."""
    if section == "images":
        return flatten_images(records, ctx, first_index)
    if section == "annotations":
        return flatten_annotations(records, ctx, sizes, first_index, geometry)
    if section == "categories":
        return flatten_categories(records, ctx, first_index)
    if section == "licenses":
        return flatten_licenses(records, ctx, first_index)
    raise BadFileError(ctx.source_file, f"unknown section {section!r}")


def _rows(records: list, col: Collector, columns: tuple[str, ...], row_of) -> tuple[dict[str, list], list[int]]:
    """Columns of the good records and their positions; ``row_of(i, rec)`` gives a record's
    values (in ``columns`` order) or raises ``BadValue``, and the record goes to ``col``."""
    rows: dict[str, list] = {k: [] for k in columns}
    keep: list[int] = []
    for i, rec in enumerate(records):
        try:
            row = row_of(i, check_object(rec))
        except BadValue as err:
            col.bad(i, rec, str(err))
            continue
        for k, v in zip(rows, row):
            rows[k].append(v)
        keep.append(i)
    return rows, keep


def flatten_images(records: list, ctx: FileContext, first_index: int = 0) -> Flat:
    col = Collector(ctx, "images", first_index)

    def row_of(i, rec):
        rid = check_id(rec.get("id"), ctx, "image", "id")
        raw: dict[str, Any] = {}
        height = typed(rec, "height", is_int, raw)
        width = typed(rec, "width", is_int, raw)
        if height is not None and height <= 0 or width is not None and width <= 0:
            raise BadValue(f"height/width {rec.get('height')}x{rec.get('width')} must be positive")
        fname = typed(rec, "file_name", is_str, raw)
        if fname is not None and "\x00" in fname:
            raise BadValue("file_name contains a NUL character")
        return (rid, fname, height, width, typed(rec, "license", is_int, raw), typed(rec, "coco_url", is_str, raw),
                typed(rec, "flickr_url", is_str, raw), typed(rec, "date_captured", is_str, raw),
                extra_text(rec, KNOWN_KEYS["images"]), _dumps(raw) if raw else None)

    rows = _images_fast(records, ctx)
    if rows is not None:
        keep = list(range(len(records)))
    else:
        rows, keep = _rows(records, col, _IMAGE_KEYS + ("extra", "raw"), row_of)
    table = arrow_table("images", rows, ctx, first_index, keep)
    sizes = ImageSizes(
        rows["id"],
        [h if h is not None else -1 for h in rows["height"]],
        [w if w is not None else -1 for w in rows["width"]],
        ctx.id_types.image,
    )
    return Flat({"images": table}, col.rejects, sizes)


_IMAGE_KEYS = KNOWN_KEYS["images"]  # id, file_name, height, width, license, coco_url, flickr_url, date_captured
_IMAGE_FIELDS = operator.itemgetter(*_IMAGE_KEYS)


def _images_fast(records: list, ctx: FileContext) -> dict[str, list] | None:
    """The image rows, checked column by column, when every record is an object with all the
    known keys and no other, each value of its type and in range (what ``row_of`` accepts
    without a raw value); None otherwise, and the records go one by one."""
    if not records or set(map(type, records)) != {dict} or set(itertools.chain.from_iterable(records)) != set(
            _IMAGE_KEYS):
        return None
    try:
        ids, fnames, heights, widths, lic, coco, flickr, date = (list(c) for c in zip(*map(_IMAGE_FIELDS, records)))
    except KeyError:
        return None
    if set(map(type, ids)) != ({str} if ctx.id_types.image == "string" else {int}):
        return None
    ints = (heights, widths, lic) if ctx.id_types.image == "string" else (ids, heights, widths, lic)
    if any(set(map(type, c)) != {int} or min(c) < -(2**63) or max(c) >= 2**63 for c in ints):
        return None
    if any(set(map(type, c)) != {str} for c in (fnames, coco, flickr, date)) or "\x00" in "".join(fnames):
        return None
    if min(heights) <= 0 or min(widths) <= 0:
        return None
    none = [None] * len(records)
    return dict(zip(_IMAGE_KEYS + ("extra", "raw"), (ids, fnames, heights, widths, lic, coco, flickr, date, none, none)))


# ---------------------------------------------------------------------------- small sections


def flatten_categories(records: list, ctx: FileContext, first_index: int = 0) -> Flat:
    col = Collector(ctx, "categories", first_index)

    def row_of(i, rec):
        rid = check_id(rec.get("id"), ctx, "category", "id")
        raw: dict[str, Any] = {}
        kp = typed(rec, "keypoints", lambda v: type(v) is list and all(type(x) is str for x in v), raw)
        sk = typed(rec, "skeleton", lambda v: type(v) is list and all(
            type(e) is list and all(is_int(x) for x in e) for e in v), raw)
        return (rid, typed(rec, "name", is_str, raw), typed(rec, "supercategory", is_str, raw), kp, sk,
                extra_text(rec, KNOWN_KEYS["categories"]), _dumps(raw) if raw else None)

    rows, keep = _rows(records, col, ("id", "name", "supercategory", "keypoints", "skeleton", "extra", "raw"), row_of)
    return Flat({"categories": arrow_table("categories", rows, ctx, first_index, keep)}, col.rejects)


def flatten_licenses(records: list, ctx: FileContext, first_index: int = 0) -> Flat:
    col = Collector(ctx, "licenses", first_index)

    def row_of(i, rec):
        raw: dict[str, Any] = {}
        return (typed(rec, "id", is_int, raw), typed(rec, "name", is_str, raw), typed(rec, "url", is_str, raw),
                extra_text(rec, KNOWN_KEYS["licenses"]), _dumps(raw) if raw else None)

    rows, keep = _rows(records, col, ("id", "name", "url", "extra", "raw"), row_of)
    return Flat({"licenses": arrow_table("licenses", rows, ctx, first_index, keep)}, col.rejects)


# ---------------------------------------------------------------------------- annotations


def flatten_annotations(records: list, ctx: FileContext, sizes: ImageSizes, first_index: int = 0,
                        geometry: Geometry | None = None) -> Flat:
    """Annotation rows; records whose polygons or bbox are in ``geometry`` hold [] there, and
    any path but the fast one reads the records as written (``geometry.original``)."""
    if ctx.kind == "captions":
        return _flatten_captions(records if geometry is None else geometry.original(), ctx, sizes, first_index)
    fast = flatten_instances_fast(records, ctx, sizes, first_index, geometry)
    if fast is not None:
        return fast
    return flatten_instances_exact(records if geometry is None else geometry.original(), ctx, sizes, first_index)


def _check_refs(rec: dict, ctx: FileContext, found: bool) -> None:
    if not found:
        raise BadValue(f"image_id {rec.get('image_id')!r} is not in this file's images")
    if ctx.category_ids is not None and "category_id" in rec and rec["category_id"] not in ctx.category_ids:
        raise BadValue(f"category_id {rec['category_id']!r} is not in this file's categories")


def _annotation_keypoints(rec: dict, ctx: FileContext, cid) -> tuple:
    """(num_keypoints, keypoints) of an annotation of a person_keypoints file."""
    kps = check_keypoints(rec.get("keypoints"), cid, ctx)
    nk = rec.get("num_keypoints")
    if nk is not None and not is_int(nk):
        raise BadValue(f"num_keypoints {nk!r} is not an integer")
    return nk, kps


def _flatten_captions(records, ctx, sizes, first_index) -> Flat:
    col = Collector(ctx, "annotations", first_index)
    found, _, _ = sizes.lookup([r.get("image_id") if type(r) is dict else None for r in records])

    def row_of(i, rec):
        rid = check_id(rec.get("id"), ctx, "annotation", "id")
        iid = check_id(rec.get("image_id"), ctx, "image", "image_id")
        if not found[i]:
            raise BadValue(f"image_id {iid!r} is not in this file's images")
        raw: dict[str, Any] = {}
        return (rid, iid, typed(rec, "caption", is_str, raw), extra_text(rec, KNOWN_KEYS["captions"]),
                _dumps(raw) if raw else None)

    rows, keep = _rows(records, col, ("id", "image_id", "caption", "extra", "raw"), row_of)
    return Flat({"captions": arrow_table("captions", rows, ctx, first_index, keep)}, col.rejects)


def flatten_instances_exact(records: list, ctx: FileContext, sizes: ImageSizes, first_index: int = 0) -> Flat:
    """Annotations of an instances, stuff or person_keypoints file, checked record by record:
    names and rejects every bad one."""
    col = Collector(ctx, "annotations", first_index)
    with_kp = ctx.kind == "person_keypoints"
    known = KNOWN_KEYS["annotations"] + (KNOWN_KEYS["keypoints"] if with_kp else ())
    image_ids = [r.get("image_id") if type(r) is dict else None for r in records]
    found, heights, widths = sizes.lookup(image_ids)

    ids, image_col, cat_col, crowd, area, extra, raws = [], [], [], [], [], [], []
    bbox_flat: list[float] = []
    bbox_valid: list[bool] = []
    segs = MaskRows()
    kp_rows: dict[str, list] = {"annotation_id": [], "image_id": [], "num_keypoints": [], "keypoints": []}
    kp_keep: list[int] = []
    keep: list[int] = []

    for i, rec in enumerate(records):
        try:
            check_object(rec)
            rid = check_id(rec.get("id"), ctx, "annotation", "id")
            iid = check_id(rec.get("image_id"), ctx, "image", "image_id")
            cid = check_id(rec.get("category_id"), ctx, "category", "category_id", required=False)
            _check_refs(rec, ctx, bool(found[i]))
            raw: dict[str, Any] = {}
            is_crowd = typed(rec, "iscrowd", lambda v: type(v) is int and v in (0, 1), raw)
            if "iscrowd" in raw and raw["iscrowd"] is not None and not isinstance(raw["iscrowd"], bool):
                raise BadValue(f"iscrowd {raw['iscrowd']!r} is not 0 or 1")
            a = typed(rec, "area", is_exact_num, raw)
            if "area" in raw and raw["area"] is not None and not is_num(raw["area"]):
                raise BadValue(f"area {raw['area']!r} is not a finite number")
            bbox = rec.get("bbox")
            if "bbox" in rec and bbox is not None:
                if not is_bbox(bbox):
                    raise BadValue(f"bbox {short(bbox)} is not 4 finite numbers [x, y, width, height]")
                if bbox[2] < 0 or bbox[3] < 0:
                    raise BadValue(f"bbox {short(bbox)} has a negative width or height")
                if not all(map(is_exact_num, bbox)):  # integers beyond 2**53: kept as written, in raw
                    raw["bbox"], bbox = bbox, None
            elif "bbox" in rec:
                raw["bbox"] = None
            kind, value = classify_segmentation(rec, int(heights[i]), int(widths[i]))
            kp = None
            if with_kp and ("keypoints" in rec or "num_keypoints" in rec):
                kp = _annotation_keypoints(rec, ctx, cid)
        except BadValue as err:
            col.bad(i, rec, str(err))
            continue
        ids.append(rid)
        image_col.append(iid)
        cat_col.append(cid)
        crowd.append(is_crowd)
        area.append(a)
        if bbox is not None:
            bbox_flat.extend(bbox)
            bbox_valid.append(True)
        else:
            bbox_valid.append(False)
        extra.append(extra_text(rec, known))
        raws.append(raw)
        segs.append(kind, value, int(heights[i]), int(widths[i]))
        keep.append(i)
        if kp is not None:
            kp_rows["annotation_id"].append(rid)
            kp_rows["image_id"].append(iid)
            kp_rows["num_keypoints"].append(kp[0])
            kp_rows["keypoints"].append(kp[1])
            kp_keep.append(i)

    m = segs.encode()
    if m.bad:
        # masks that failed validation: drop those rows (or raise) and keep the rest
        good = col.drop_bad(m.bad, keep, records)
        ids, image_col, cat_col, crowd, area, extra, raws = (
            [x[j] for j in good] for x in (ids, image_col, cat_col, crowd, area, extra, raws))
        bbox_idx = np.cumsum(bbox_valid) - 1
        bbox_rows = [bbox_flat[4 * bbox_idx[j]: 4 * bbox_idx[j] + 4] if bbox_valid[j] else None for j in good]
        bbox_arr = pa.array(bbox_rows, pa.list_(pa.float64()))
        m = m.take(good)
        keep = [keep[j] for j in good]
        kept = set(keep)
        kp_sel = [k for k, i in enumerate(kp_keep) if i in kept]
        kp_rows = {k: [v[m] for m in kp_sel] for k, v in kp_rows.items()}
        kp_keep = [kp_keep[m] for m in kp_sel]
    else:
        bbox_arr = bbox_array(bbox_flat, bbox_valid)

    columns = {
        "id": ids,
        "image_id": image_col,
        "category_id": cat_col,
        "iscrowd": crowd,
        "area": area,
        "bbox": bbox_arr,
        "rle_counts": m.counts,
        "rle_size": m.size,
        "mask_area": m.area,
        "polygons": m.polygons,
        "segmentation_format": m.fmt,
        "extra": extra,
        "raw": [_dumps(r) if r else None for r in raws],
    }
    tables = {"annotations": arrow_table("annotations", columns, ctx, first_index, keep)}
    if with_kp:
        tables["keypoints"] = arrow_table("keypoints", kp_rows, ctx, first_index, kp_keep)
    return Flat(tables, col.rejects)



_SCALARS = operator.itemgetter("id", "image_id", "category_id", "iscrowd", "area")


def flatten_instances_fast(records: list, ctx: FileContext, sizes: ImageSizes, first_index: int = 0,
                           geometry: Geometry | None = None) -> Flat | None:
    """The common case with list comprehensions and Arrow conversions instead of a check
    per field per record; None as soon as anything is unusual, and the exact path then
    finds, names and rejects the culprit. Both paths give the same rows for good input.
    The rows in ``geometry`` take their polygons and bboxes from its arrays.
    """
    n = len(records)
    if n == 0 or set(map(type, records)) != {dict}:
        return None
    with_kp = ctx.kind == "person_keypoints"
    known = frozenset(KNOWN_KEYS["annotations"] + (KNOWN_KEYS["keypoints"] if with_kp else ()))
    try:  # a record without one of these: its None would fail the type checks below
        ids, image_ids, cat_ids, crowd, areas = zip(*map(_SCALARS, records))
    except KeyError:
        return None
    try:
        cols = []
        for values, space in ((ids, "annotation"), (image_ids, "image"), (cat_ids, "category")):
            string = getattr(ctx.id_types, space) == "string"
            if set(map(type, values)) != ({str} if string else {int}):
                return None
            cols.append(pa.array(values, pa.string() if string else pa.int64()))
    except (OverflowError, pa.ArrowException):
        return None
    if ctx.category_ids is not None and not set(cat_ids) <= ctx.category_ids:
        return None
    if set(map(type, crowd)) != {int} or not set(map(type, areas)) <= NUMBER_TYPES:
        return None
    crowd_np = np.array(crowd, dtype=np.int64)
    try:  # an integer beyond float64's range: the exact path names it
        area_np = np.array(areas, dtype=np.float64)
    except OverflowError:
        return None
    if not (((crowd_np == 0) | (crowd_np == 1)).all() and np.isfinite(area_np).all()):
        return None
    if (np.abs(area_np) > EXACT).any():  # maybe integers a float64 cannot hold: the exact path
        return None
    bnp = bbox_values(records, geometry)
    if bnp is None:
        return None
    if not np.isfinite(bnp).all() or (bnp.reshape(-1, 4)[:, 2:] < 0).any() or (np.abs(bnp) > EXACT).any():
        return None
    found, heights, widths = sizes.lookup(cols[1].to_numpy() if ctx.id_types.image == "int64" else image_ids)
    if not found.all():
        return None

    hl, wl = heights.tolist(), widths.tolist()
    seg_kind = np.full(n, KIND_CODE["polygon"], np.uint8)
    seg_value: list = [None] * n
    others = range(n)
    if geometry is not None:
        rows = geometry.rows
        if len(rows) and ((heights[rows] <= 0) | (widths[rows] <= 0)).any():
            return None
        rest = np.ones(n, dtype=bool)
        rest[rows] = False
        others = np.flatnonzero(rest).tolist()
    listed = []  # rows whose polygons are Python lists
    read_runs = geometry.rle_runs() if geometry is not None and len(geometry.rle_rows) else {}
    for i in others:
        seg = records[i].get("segmentation")
        if type(seg) is list and seg and all(type(p) is list for p in seg):
            if hl[i] <= 0 or wl[i] <= 0:
                return None
            listed.append(i)
            seg_value[i] = seg
        else:
            try:
                kind, seg_value[i] = classify_segmentation(records[i], hl[i], wl[i])
            except BadValue:
                return None
            if i in read_runs:  # its counts are [] in the record: the runs read from the bytes
                seg_value[i] = (read_runs[i], seg_value[i][1])
            seg_kind[i] = KIND_CODE[kind]
    poly = gather_polygons(geometry, listed, seg_value)
    if poly is None:
        return None

    kp_rows: dict[str, list] = {"annotation_id": [], "image_id": [], "num_keypoints": [], "keypoints": []}
    kp_keep: list[int] = []
    if with_kp:
        for i, r in enumerate(records):
            if "keypoints" in r or "num_keypoints" in r:
                try:
                    nk, kps = _annotation_keypoints(r, ctx, cat_ids[i])
                except BadValue:
                    return None
                kp_rows["annotation_id"].append(ids[i])
                kp_rows["image_id"].append(image_ids[i])
                kp_rows["num_keypoints"].append(nk)
                kp_rows["keypoints"].append(kps)
                kp_keep.append(i)

    m = encode_masks(seg_kind, seg_value, heights, widths, poly=poly)
    if m.bad:
        return None
    offsets = np.arange(0, 4 * n + 1, 4, dtype=np.int32)
    columns = {
        "id": cols[0],
        "image_id": cols[1],
        "category_id": cols[2],
        "iscrowd": pa.array(crowd_np.astype(np.int32)),
        "area": pa.array(area_np),
        "bbox": pa.ListArray.from_arrays(pa.array(offsets), pa.array(bnp)),
        "rle_counts": m.counts,
        "rle_size": m.size,
        "mask_area": m.area,
        "polygons": m.polygons,
        "segmentation_format": m.fmt,
        "extra": (pa.nulls(n, pa.string()) if set(itertools.chain.from_iterable(records)) <= known
                  else [None if r.keys() <= known else extra_text(r, known) for r in records]),
        "raw": pa.nulls(n, pa.string()),
    }
    keep = list(range(n))
    tables = {"annotations": arrow_table("annotations", columns, ctx, first_index, keep)}
    if with_kp:
        tables["keypoints"] = arrow_table("keypoints", kp_rows, ctx, first_index, kp_keep)
    return Flat(tables, [])

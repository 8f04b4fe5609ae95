"""flatten: parsed COCO records → Arrow tables in the warehouse schemas.

Input: the bytes of one chunk (whole records of one top-level array, from ``split``) and
a ``FileContext`` (which file, which kind, the type of each id space, bad-record policy).
Output: a ``Flat``: one Arrow table per warehouse table the records feed, the rejected
records, and for ``images`` the id → (height, width) lookup that annotation chunks need.

Guarantees: rows keep the source order (``record_index``); every value the typed columns
cannot hold exactly goes to ``raw`` and every unknown key to ``extra`` (JSON text), so an
export writes the source back; a bad record raises ``BadRecordError`` naming file, record
and problem, or becomes a ``rejects`` row when the policy is ``skip``. Masks are encoded
by ``masks`` in one batch per chunk, after validation, never one C call per coordinate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import sys
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa

from .. import masks
from ..jsontext import dumps_text as _dumps
from ..errors import BadFileError, BadRecordError
from ..schema import IdTypes, schema_for

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT = 2**53  # integers up to this magnitude are exact in float64
_RAW_LIMIT = 1 << 20

KNOWN_KEYS = {
    "images": ("id", "file_name", "height", "width", "license", "coco_url", "flickr_url", "date_captured"),
    "annotations": ("id", "image_id", "category_id", "iscrowd", "area", "bbox", "segmentation"),
    "keypoints": ("keypoints", "num_keypoints"),
    "captions": ("id", "image_id", "caption"),
    "categories": ("id", "name", "supercategory", "keypoints", "skeleton"),
    "licenses": ("id", "name", "url"),
}


@dataclasses.dataclass(frozen=True)
class FileContext:
    """What a chunk task needs to know about the file its records come from."""

    source_file: str
    kind: str  # instances | stuff | person_keypoints | captions | image_info
    id_types: IdTypes = IdTypes()  # int64 | string per id space (image, annotation, category)
    on_bad_record: str = "error"  # error | skip
    # category id -> number of keypoint names (person_keypoints files)
    category_keypoints: dict = dataclasses.field(default_factory=dict)
    category_ids: frozenset | None = None
    # id space -> what decided its type, for the mixed-id-types message: "the first image's id is 'a'"
    id_origins: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Flat:
    tables: dict[str, pa.Table]
    rejects: list[dict]
    image_sizes: ImageSizes | None = None


class ImageSizes:
    """id → (height, width) for the images of one file, vectorised for int64 ids."""

    def __init__(self, ids: list, heights: list, widths: list, id_type: str):
        self.id_type = id_type
        if id_type == "int64":
            ids_arr = np.asarray(ids, dtype=np.int64)
            order = np.argsort(ids_arr, kind="stable")
            self.ids = ids_arr[order]
            self.h = np.asarray(heights, dtype=np.int64)[order]
            self.w = np.asarray(widths, dtype=np.int64)[order]
        else:
            self.map = {i: (h, w) for i, h, w in zip(ids, heights, widths)}

    @classmethod
    def merge(cls, parts: list[ImageSizes], id_type: str) -> ImageSizes:
        if id_type == "int64":
            out = cls([], [], [], id_type)
            good = [p for p in parts if p is not None]
            if good:
                ids = np.concatenate([p.ids for p in good])
                order = np.argsort(ids, kind="stable")
                out.ids = ids[order]
                out.h = np.concatenate([p.h for p in good])[order]
                out.w = np.concatenate([p.w for p in good])[order]
            return out
        out = cls([], [], [], id_type)
        for p in parts:
            if p is not None:
                out.map.update(p.map)
        return out

    def __len__(self) -> int:
        return len(self.ids) if self.id_type == "int64" else len(self.map)

    def lookup(self, ids: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, heights, widths); a height of -1 means the image has no usable height."""
        if self.id_type == "int64":
            q = np.asarray([i if type(i) is int else 0 for i in ids], dtype=np.int64)
            pos = np.searchsorted(self.ids, q)
            pos_c = np.minimum(pos, max(len(self.ids) - 1, 0))
            found = (pos < len(self.ids)) & (self.ids[pos_c] == q) if len(self.ids) else np.zeros(len(q), bool)
            found &= np.asarray([type(i) is int for i in ids], dtype=bool)
            h = np.where(found, self.h[pos_c] if len(self.ids) else 0, -1)
            w = np.where(found, self.w[pos_c] if len(self.ids) else 0, -1)
            return found, h, w
        hw = [self.map.get(i) if type(i) is str else None for i in ids]  # a list id is no key
        found = np.asarray([x is not None for x in hw], dtype=bool)
        h = np.asarray([x[0] if x else -1 for x in hw], dtype=np.int64)
        w = np.asarray([x[1] if x else -1 for x in hw], dtype=np.int64)
        return found, h, w


@contextlib.contextmanager
def no_cyclic_gc():
    """Python's cyclic garbage collector off while a chunk is parsed and flattened (a
    context manager, or a decorator of a task function: ``@no_cyclic_gc()``).

    Parsed records are millions of dicts and lists, none in a reference cycle; with the
    collector on, every few hundred allocations of the flatten step start a collection
    that walks them again (measured: a fifth of the ingest time at train2017 scale).
    Reference counting frees them all the same.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------- parsing


def parse_chunk(buf: bytes, *, source: str, section: str, offset: int) -> list:
    """The records of a chunk (bytes between records of one array) as Python objects."""
    body = buf.strip(b" \t\r\n")
    if body.startswith(b","):
        body = body[1:]
    if not body.strip(b" \t\r\n"):
        return []
    data = b"[" + body + b"]"
    try:
        records = orjson.loads(data)
    except orjson.JSONDecodeError:
        # the stdlib parser accepts what orjson refuses but Python's json writes
        # (NaN, Infinity, integers beyond 64 bits); records then meet the validators
        try:
            records = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise BadFileError(
                source, f"{section}: bytes at {offset + err.start - 1} are not UTF-8 text"
            ) from None
        except json.JSONDecodeError as err:
            where = offset + err.pos - 1 + (len(buf) - len(buf.lstrip(b" \t\r\n,")))
            raise BadFileError(source, f"{section}: invalid JSON near byte {where}: {err.msg}") from None
        except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
            raise BadFileError(
                source, f"{section}: a number near byte {offset} has more digits than Python reads "
                f"({sys.get_int_max_str_digits()})"
            ) from None
        except RecursionError:
            raise BadFileError(source, f"{section}: a record near byte {offset} is nested too deeply") from None
    return records


# ---------------------------------------------------------------------------- helpers


class _Bad(Exception):
    """Raised inside a record's validation; turned into BadRecordError or a reject."""


def _is_int(v) -> bool:
    return type(v) is int and _INT64_MIN <= v <= _INT64_MAX


def _is_num(v) -> bool:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


def _is_exact_num(v) -> bool:
    """A finite number that a float64 column holds exactly (no integer beyond 2**53)."""
    return type(v) is float and math.isfinite(v) or type(v) is int and -_EXACT <= v <= _EXACT


def _check_id(value, ctx: FileContext, space: str, what: str, required: bool = True):
    """``value`` as an id of ``space`` (image | annotation | category), typed as the file's
    ids of that space are; an id of the other type is a bad record (mixed id types)."""
    origin = ctx.id_origins.get(space)
    mixed = f"(mixed {space} id types; {origin})" if origin else f"(mixed {space} id types)"
    if value is None:
        if required:
            raise _Bad(f"{what} is missing")
        return None
    if getattr(ctx.id_types, space) == "int64":
        if type(value) is int:
            if not _is_int(value):
                raise _Bad(f"{what} {value} does not fit in a 64-bit integer")
            return value
        if type(value) is str:
            raise _Bad(f"{what} {value!r} is a string but this file's {space} ids are integers {mixed}")
        raise _Bad(f"{what} {value!r} is not an integer")
    if type(value) is str:
        return value
    if type(value) is int:
        raise _Bad(f"{what} {value} is an integer but this file's {space} ids are strings {mixed}")
    raise _Bad(f"{what} {value!r} is not a string id")


def _record_id_text(rec) -> str | None:
    if isinstance(rec, dict) and "id" in rec:
        try:
            return json.dumps(rec["id"], ensure_ascii=False)
        except (TypeError, ValueError):
            return repr(rec["id"])
    return None


class _Collector:
    """Collects rows of the tables of one chunk, and the rejects."""

    def __init__(self, ctx: FileContext, section: str, first_index: int):
        self.ctx = ctx
        self.section = section
        self.first_index = first_index
        self.rejects: list[dict] = []

    def bad(self, i: int, rec, problem: str) -> None:
        rid = rec.get("id") if isinstance(rec, dict) else None
        if type(rid) not in (int, str):  # not bool: "id=True" would read as a real id
            rid = None
        if self.ctx.on_bad_record != "skip":
            raise BadRecordError(self.ctx.source_file, self.section, self.first_index + i, rid, problem)
        raw = _dumps(rec)
        self.rejects.append(
            {
                "section": self.section,
                "record_id": _record_id_text(rec),
                "reason": problem,
                "raw": raw if len(raw) <= _RAW_LIMIT else raw[:_RAW_LIMIT],
                "source_file": self.ctx.source_file,
                "kind": self.ctx.kind,
                "record_index": self.first_index + i,
            }
        )


def _split_known(rec: dict, known: tuple[str, ...]) -> str | None:
    extra = {k: v for k, v in rec.items() if k not in known}
    return _dumps(extra) if extra else None


def _typed(rec: dict, key: str, ok, raw: dict):
    """The value of ``key`` when ``ok(value)``, else None (and the value is kept in ``raw``)."""
    if key not in rec:
        return None
    v = rec[key]
    if v is None:
        raw[key] = None
        return None
    if ok(v):
        return v
    raw[key] = v
    return None


def _str_ok(v) -> bool:
    return type(v) is str


def _table(name: str, columns: dict, ctx: FileContext, first_index: int, indices: list[int]) -> pa.Table:
    schema = schema_for(name, ctx.id_types)
    n = len(indices)
    columns = dict(columns)
    columns["source_file"] = pa.array([ctx.source_file] * n, pa.string())
    columns["kind"] = pa.array([ctx.kind] * n, pa.string())
    columns["record_index"] = pa.array(np.asarray(indices, dtype=np.int64) + first_index, pa.int64())
    arrays = []
    for field in schema:
        col = columns[field.name]
        arrays.append(col if isinstance(col, (pa.Array, pa.ChunkedArray)) else pa.array(col, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def rejects_table(rejects: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rejects, schema=schema_for("rejects"))


# ---------------------------------------------------------------------------- images


def flatten_images(records: list, ctx: FileContext, first_index: int = 0) -> Flat:
    col = _Collector(ctx, "images", first_index)
    known = KNOWN_KEYS["images"]
    rows: dict[str, list] = {k: [] for k in ("id", "file_name", "height", "width", "license", "coco_url",
                                             "flickr_url", "date_captured", "extra", "raw")}
    keep: list[int] = []
    for i, rec in enumerate(records):
        try:
            if type(rec) is not dict:
                raise _Bad(f"is a JSON {type(rec).__name__}, expected an object")
            rid = _check_id(rec.get("id"), ctx, "image", "id")
            raw: dict[str, Any] = {}
            height = _typed(rec, "height", _is_int, raw)
            width = _typed(rec, "width", _is_int, raw)
            if height is not None and height <= 0 or width is not None and width <= 0:
                raise _Bad(f"height/width {rec.get('height')}x{rec.get('width')} must be positive")
            fname = _typed(rec, "file_name", _str_ok, raw)
            if fname is not None and "\x00" in fname:
                raise _Bad("file_name contains a NUL character")
            row = (
                rid,
                fname,
                height,
                width,
                _typed(rec, "license", _is_int, raw),
                _typed(rec, "coco_url", _str_ok, raw),
                _typed(rec, "flickr_url", _str_ok, raw),
                _typed(rec, "date_captured", _str_ok, raw),
                _split_known(rec, known),
                _dumps(raw) if raw else None,
            )
        except _Bad as err:
            col.bad(i, rec, str(err))
            continue
        for k, v in zip(rows, row):
            rows[k].append(v)
        keep.append(i)
    table = _table("images", rows, ctx, first_index, keep)
    sizes = ImageSizes(
        rows["id"],
        [h if h is not None else -1 for h in rows["height"]],
        [w if w is not None else -1 for w in rows["width"]],
        ctx.id_types.image,
    )
    return Flat({"images": table}, col.rejects, sizes)


# ---------------------------------------------------------------------------- small sections


def flatten_categories(records: list, ctx: FileContext, first_index: int = 0) -> Flat:
    col = _Collector(ctx, "categories", first_index)
    rows: dict[str, list] = {k: [] for k in ("id", "name", "supercategory", "keypoints", "skeleton", "extra", "raw")}
    keep = []
    for i, rec in enumerate(records):
        try:
            if type(rec) is not dict:
                raise _Bad(f"is a JSON {type(rec).__name__}, expected an object")
            rid = _check_id(rec.get("id"), ctx, "category", "id")
            raw: dict[str, Any] = {}
            kp = _typed(rec, "keypoints", lambda v: type(v) is list and all(type(x) is str for x in v), raw)
            sk = _typed(rec, "skeleton", lambda v: type(v) is list and all(
                type(e) is list and all(_is_int(x) for x in e) for e in v), raw)
            row = (rid, _typed(rec, "name", _str_ok, raw), _typed(rec, "supercategory", _str_ok, raw), kp, sk,
                   _split_known(rec, KNOWN_KEYS["categories"]), _dumps(raw) if raw else None)
        except _Bad as err:
            col.bad(i, rec, str(err))
            continue
        for k, v in zip(rows, row):
            rows[k].append(v)
        keep.append(i)
    return Flat({"categories": _table("categories", rows, ctx, first_index, keep)}, col.rejects)


def flatten_licenses(records: list, ctx: FileContext, first_index: int = 0) -> Flat:
    col = _Collector(ctx, "licenses", first_index)
    rows: dict[str, list] = {k: [] for k in ("id", "name", "url", "extra", "raw")}
    keep = []
    for i, rec in enumerate(records):
        try:
            if type(rec) is not dict:
                raise _Bad(f"is a JSON {type(rec).__name__}, expected an object")
            raw: dict[str, Any] = {}
            row = (_typed(rec, "id", _is_int, raw), _typed(rec, "name", _str_ok, raw),
                   _typed(rec, "url", _str_ok, raw), _split_known(rec, KNOWN_KEYS["licenses"]),
                   _dumps(raw) if raw else None)
        except _Bad as err:
            col.bad(i, rec, str(err))
            continue
        for k, v in zip(rows, row):
            rows[k].append(v)
        keep.append(i)
    return Flat({"licenses": _table("licenses", rows, ctx, first_index, keep)}, col.rejects)


# ---------------------------------------------------------------------------- annotations


def flatten_annotations(records: list, ctx: FileContext, sizes: ImageSizes, first_index: int = 0) -> Flat:
    if ctx.kind == "captions":
        return _flatten_captions(records, ctx, sizes, first_index)
    return _flatten_instances(records, ctx, sizes, first_index)


def _check_refs(rec: dict, ctx: FileContext, found: bool) -> None:
    if not found:
        raise _Bad(f"image_id {rec.get('image_id')!r} is not in this file's images")
    if ctx.category_ids is not None and "category_id" in rec and rec["category_id"] not in ctx.category_ids:
        raise _Bad(f"category_id {rec['category_id']!r} is not in this file's categories")


def _flatten_captions(records, ctx, sizes, first_index) -> Flat:
    col = _Collector(ctx, "annotations", first_index)
    image_ids = [r.get("image_id") if type(r) is dict else None for r in records]
    found, _, _ = sizes.lookup(image_ids)
    rows: dict[str, list] = {k: [] for k in ("id", "image_id", "caption", "extra", "raw")}
    keep = []
    for i, rec in enumerate(records):
        try:
            if type(rec) is not dict:
                raise _Bad(f"is a JSON {type(rec).__name__}, expected an object")
            rid = _check_id(rec.get("id"), ctx, "annotation", "id")
            iid = _check_id(rec.get("image_id"), ctx, "image", "image_id")
            if not found[i]:
                raise _Bad(f"image_id {iid!r} is not in this file's images")
            raw: dict[str, Any] = {}
            row = (rid, iid, _typed(rec, "caption", _str_ok, raw), _split_known(rec, KNOWN_KEYS["captions"]),
                   _dumps(raw) if raw else None)
        except _Bad as err:
            col.bad(i, rec, str(err))
            continue
        for k, v in zip(rows, row):
            rows[k].append(v)
        keep.append(i)
    return Flat({"captions": _table("captions", rows, ctx, first_index, keep)}, col.rejects)


def _bbox_ok(v) -> bool:
    return type(v) is list and len(v) == 4 and all(_is_num(x) for x in v)


def _flatten_instances(records, ctx, sizes, first_index) -> Flat:
    fast = _fast_instances(records, ctx, sizes, first_index)
    if fast is not None:
        return fast
    col = _Collector(ctx, "annotations", first_index)
    with_kp = ctx.kind == "person_keypoints"
    known = KNOWN_KEYS["annotations"] + (KNOWN_KEYS["keypoints"] if with_kp else ())
    image_ids = [r.get("image_id") if type(r) is dict else None for r in records]
    found, heights, widths = sizes.lookup(image_ids)

    ids, image_col, cat_col, crowd, area, extra, raws = [], [], [], [], [], [], []
    bbox_flat: list[float] = []
    bbox_valid: list[bool] = []
    seg_kind: list[str] = []  # per kept row: polygon | rle | uncompressed_rle | none | empty
    seg_value: list = []
    kp_rows: dict[str, list] = {"annotation_id": [], "image_id": [], "num_keypoints": [], "keypoints": []}
    kp_keep: list[int] = []
    keep: list[int] = []
    h_keep: list[int] = []
    w_keep: list[int] = []

    for i, rec in enumerate(records):
        try:
            if type(rec) is not dict:
                raise _Bad(f"is a JSON {type(rec).__name__}, expected an object")
            rid = _check_id(rec.get("id"), ctx, "annotation", "id")
            iid = _check_id(rec.get("image_id"), ctx, "image", "image_id")
            cid = _check_id(rec.get("category_id"), ctx, "category", "category_id", required=False)
            _check_refs(rec, ctx, bool(found[i]))
            raw: dict[str, Any] = {}
            is_crowd = _typed(rec, "iscrowd", lambda v: type(v) is int and v in (0, 1), raw)
            if "iscrowd" in raw and raw["iscrowd"] is not None and not isinstance(raw["iscrowd"], bool):
                raise _Bad(f"iscrowd {raw['iscrowd']!r} is not 0 or 1")
            a = _typed(rec, "area", _is_exact_num, raw)
            if "area" in raw and raw["area"] is not None and not _is_num(raw["area"]):
                raise _Bad(f"area {raw['area']!r} is not a finite number")
            bbox = rec.get("bbox")
            if "bbox" in rec and bbox is not None:
                if not _bbox_ok(bbox):
                    raise _Bad(f"bbox {_short(bbox)} is not 4 finite numbers [x, y, width, height]")
                if bbox[2] < 0 or bbox[3] < 0:
                    raise _Bad(f"bbox {_short(bbox)} has a negative width or height")
                if not all(map(_is_exact_num, bbox)):  # integers beyond 2**53: kept as written, in raw
                    raw["bbox"], bbox = bbox, None
            elif "bbox" in rec:
                raw["bbox"] = None
            kind, value = _classify_segmentation(rec, int(heights[i]), int(widths[i]))
            kp = None
            if with_kp and ("keypoints" in rec or "num_keypoints" in rec):
                kp = _check_keypoints(rec, ctx, cid)
        except _Bad as err:
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
        extra.append(_split_known(rec, known))
        raws.append(raw)
        seg_kind.append(kind)
        seg_value.append(value)
        keep.append(i)
        h_keep.append(int(heights[i]))
        w_keep.append(int(widths[i]))
        if kp is not None:
            kp_rows["annotation_id"].append(rid)
            kp_rows["image_id"].append(iid)
            kp_rows["num_keypoints"].append(kp[0])
            kp_rows["keypoints"].append(kp[1])
            kp_keep.append(i)

    m = _encode_masks(seg_kind, seg_value, h_keep, w_keep)
    if m.bad:
        # masks that failed validation: drop those rows (or raise) and keep the rest
        for j, problem in sorted(m.bad.items()):
            col.bad(keep[j], records[keep[j]], problem)
        good = [j for j in range(len(keep)) if j not in m.bad]
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
        bbox_arr = _bbox_array(bbox_flat, bbox_valid)

    columns = {
        "id": ids,
        "image_id": image_col,
        "category_id": cat_col,
        "iscrowd": crowd,
        "area": area,
        "bbox": bbox_arr,
        "rle_counts": pa.array(m.counts, pa.string()),
        "rle_size": pa.array(m.size, pa.list_(pa.int32())),
        "mask_area": m.area_column(),
        "polygons": m.polygons,
        "segmentation_format": m.fmt,
        "extra": extra,
        "raw": [_dumps(r) if r else None for r in raws],
    }
    tables = {"annotations": _table("annotations", columns, ctx, first_index, keep)}
    if with_kp:
        tables["keypoints"] = _table("keypoints", kp_rows, ctx, first_index, kp_keep)
    return Flat(tables, col.rejects)



_NUMBER_TYPES = frozenset((int, float))


def _fast_instances(records, ctx, sizes, first_index) -> Flat | None:
    """The common case with list comprehensions and Arrow conversions instead of a check
    per field per record; None as soon as anything is unusual, and the exact path then
    finds, names and rejects the culprit. Both paths give the same rows for good input.
    """
    n = len(records)
    if n == 0 or not all(type(r) is dict for r in records):
        return None
    with_kp = ctx.kind == "person_keypoints"
    known = frozenset(KNOWN_KEYS["annotations"] + (KNOWN_KEYS["keypoints"] if with_kp else ()))
    ids = [r.get("id") for r in records]
    image_ids = [r.get("image_id") for r in records]
    cat_ids = [r.get("category_id") for r in records]
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
    crowd = [r.get("iscrowd") for r in records]
    areas = [r.get("area") for r in records]
    bboxes = [r.get("bbox") for r in records]
    if set(map(type, crowd)) != {int} or not set(map(type, areas)) <= _NUMBER_TYPES:
        return None
    crowd_np = np.array(crowd, dtype=np.int64)
    area_np = np.array(areas, dtype=np.float64)
    if not (((crowd_np == 0) | (crowd_np == 1)).all() and np.isfinite(area_np).all()):
        return None
    if (np.abs(area_np) > _EXACT).any():  # maybe integers a float64 cannot hold: the exact path
        return None
    if set(map(type, bboxes)) != {list} or set(map(len, bboxes)) != {4}:
        return None
    bflat = [x for b in bboxes for x in b]
    if not set(map(type, bflat)) <= _NUMBER_TYPES:
        return None
    bnp = np.array(bflat, dtype=np.float64)
    if not np.isfinite(bnp).all() or (bnp.reshape(-1, 4)[:, 2:] < 0).any() or (np.abs(bnp) > _EXACT).any():
        return None
    found, heights, widths = sizes.lookup(image_ids)
    if not found.all():
        return None

    seg_kind: list[str] = []
    seg_value: list = []
    flat: list = []
    part_offsets = [0]
    ann_parts = [0]
    for r, h, w in zip(records, heights.tolist(), widths.tolist()):
        seg = r.get("segmentation")
        if type(seg) is list and seg and all(type(p) is list for p in seg):
            if h <= 0 or w <= 0:
                return None
            for p in seg:
                flat.extend(p)
                part_offsets.append(len(flat))
            ann_parts.append(len(part_offsets) - 1)
            seg_kind.append("polygon")
            seg_value.append(None)
        else:
            try:
                kind, value = _classify_segmentation(r, h, w)
            except _Bad:
                return None
            seg_kind.append(kind)
            seg_value.append(value)
    if flat and not set(map(type, flat)) <= _NUMBER_TYPES:
        return None

    kp_rows: dict[str, list] = {"annotation_id": [], "image_id": [], "num_keypoints": [], "keypoints": []}
    kp_keep: list[int] = []
    if with_kp:
        for i, r in enumerate(records):
            if "keypoints" in r or "num_keypoints" in r:
                try:
                    nk, kps = _check_keypoints(r, ctx, cat_ids[i])
                except _Bad:
                    return None
                kp_rows["annotation_id"].append(ids[i])
                kp_rows["image_id"].append(image_ids[i])
                kp_rows["num_keypoints"].append(nk)
                kp_rows["keypoints"].append(kps)
                kp_keep.append(i)

    m = _encode_masks(seg_kind, seg_value, heights.tolist(), widths.tolist(), poly=(flat, part_offsets, ann_parts))
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
        "rle_counts": pa.array(m.counts, pa.string()),
        "rle_size": pa.array(m.size, pa.list_(pa.int32())),
        "mask_area": m.area_column(),
        "polygons": m.polygons,
        "segmentation_format": m.fmt,
        "extra": [None if r.keys() <= known else _split_known(r, known) for r in records],
        "raw": pa.nulls(n, pa.string()),
    }
    keep = list(range(n))
    tables = {"annotations": _table("annotations", columns, ctx, first_index, keep)}
    if with_kp:
        tables["keypoints"] = _table("keypoints", kp_rows, ctx, first_index, kp_keep)
    return Flat(tables, [])

def _short(v, limit: int = 80) -> str:
    text = _dumps(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _classify_segmentation(rec: dict, h: int, w: int):
    """(kind, value) of an annotation's segmentation; raises _Bad for malformed ones."""
    if "segmentation" not in rec or rec["segmentation"] is None:
        return "none", None
    seg = rec["segmentation"]
    if type(seg) is list:
        if not seg:
            return "empty", None
        if all(type(p) is list for p in seg):
            if h <= 0 or w <= 0:
                raise _Bad("has polygons but its image has no height/width to draw them on")
            if not {type(x) for p in seg for x in p} <= _NUMBER_TYPES:  # before numpy or C sees them
                raise _Bad("polygon has a coordinate that is not a number")
            return "polygon", seg
        if all(type(p) in (int, float) for p in seg):
            raise _Bad("segmentation is a flat list of numbers; expected a list of polygons [[x1, y1, x2, y2, ...]]")
        raise _Bad("segmentation list mixes polygons and other values")
    if type(seg) is dict:
        counts, size = seg.get("counts"), seg.get("size")
        if not (type(size) is list and len(size) == 2 and all(_is_int(x) and x >= 0 for x in size)):
            raise _Bad(f"RLE size {_short(size)} is not [height, width]")
        if h > 0 and (size[0], size[1]) != (h, w):
            if (size[1], size[0]) == (h, w):
                raise _Bad(f"RLE size {size} is [width, height]; the image is {h}x{w} (height x width)")
            raise _Bad(f"RLE size {size} differs from the image's [height, width] [{h}, {w}]")
        if type(counts) is list:
            return "uncompressed_rle", (counts, size)
        if type(counts) is str:
            if counts.startswith(("b'", 'b"')):
                raise _Bad("RLE counts is a Python bytes repr (b'...'); decode the bytes to str before json.dump")
            return "rle", (counts, size)
        raise _Bad(f"RLE counts {_short(counts)} is neither a string nor a list of integers")
    raise _Bad(f"segmentation {_short(seg)} is neither polygons nor an RLE object")


class _Masks(NamedTuple):
    """The mask columns of a chunk's annotations, and the rows whose mask is bad."""

    counts: list  # compressed string or None per row
    size: list  # [h, w] or None
    polygons: pa.Array  # list<list<double>>, null where the source was not polygons
    fmt: list  # segmentation_format
    bad: dict  # {row: problem}
    area: np.ndarray  # int64 foreground pixels (0 where counts is None)

    def take(self, rows: list[int]) -> _Masks:
        sel = np.asarray(rows, dtype=np.int64)
        return _Masks([self.counts[j] for j in rows], [self.size[j] for j in rows],
                      self.polygons.take(pa.array(sel)) if len(self.polygons) else self.polygons,
                      [self.fmt[j] for j in rows], {}, self.area[sel])

    def area_column(self) -> pa.Array:
        return pa.array(self.area, pa.int64(), mask=np.array([c is None for c in self.counts], dtype=bool))


def _encode_masks(seg_kind, seg_value, heights, widths, poly=None) -> _Masks:
    """Encode every mask of a chunk; polygons in one batch, validated once, with areas.

    ``poly`` = (flat coordinate list, part offsets, annotation part offsets) of the polygon
    rows, when the caller already gathered them.
    """
    n = len(seg_kind)
    rle_counts: list = [None] * n
    rle_size: list = [None] * n
    areas = np.zeros(n, np.int64)
    fmt = [("none" if k in ("none", "empty") else k) for k in seg_kind]
    bad: dict[int, str] = {}

    poly_rows = [j for j in range(n) if seg_kind[j] == "polygon"]
    # polygons: list<list<double>> built from flat offsets, nulls where the source was not polygons
    if poly is not None:
        flat, part_offsets, ann_parts = poly
    else:
        flat = []
        part_offsets = [0]
        ann_parts = [0]
        for j in poly_rows:
            for part in seg_value[j]:
                flat.extend(part)
                part_offsets.append(len(flat))
            ann_parts.append(len(part_offsets) - 1)
    if poly is None and flat and not _all_numbers(flat):
        # non-numeric coordinates: find the rows, reject them and encode the others as 0s
        for k, j in enumerate(poly_rows):
            if not all(_is_plain_number(x) for part in seg_value[j] for x in part):
                bad[j] = "polygon has a coordinate that is not a number"
        flat = [x if _is_plain_number(x) else 0.0 for x in flat]
    coords = np.array(flat, dtype=np.float64) if len(flat) else np.zeros(0, np.float64)
    part_offsets_arr = np.asarray(part_offsets, dtype=np.int64)
    ann_parts_arr = np.asarray(ann_parts, dtype=np.int64)
    if poly_rows:
        h_arr = np.asarray([heights[j] for j in poly_rows], dtype=np.int64)
        w_arr = np.asarray([widths[j] for j in poly_rows], dtype=np.int64)
        enc = masks.encode_polygon_batch(coords, part_offsets_arr, ann_parts_arr, h_arr, w_arr)
        ok = np.ones(len(poly_rows), dtype=bool)
        if bad:  # rows with non-numbers were encoded as zeros: drop those
            ok[[k for k, j in enumerate(poly_rows) if j in bad]] = False
        for k, problem in enc.problems.items():
            if ok[k]:
                bad[poly_rows[k]] = problem
            ok[k] = False
        hw = np.stack([h_arr, w_arr], axis=1).tolist()
        for k in np.flatnonzero(ok).tolist():
            j = poly_rows[k]
            rle_counts[j], rle_size[j] = enc.counts[k], hw[k]
        areas[poly_rows] = enc.areas
    rle_rows = [j for j in range(n) if seg_kind[j] in ("uncompressed_rle", "rle")]
    if rle_rows:
        enc = masks.encode_rle_batch([seg_value[j][0] for j in rle_rows],
                                     [(seg_value[j][1][0], seg_value[j][1][1]) for j in rle_rows])
        for k, j in enumerate(rle_rows):
            if k in enc.problems:
                bad[j] = enc.problems[k]
            else:
                rle_counts[j], areas[j], rle_size[j] = enc.counts[k], enc.areas[k], list(seg_value[j][1])

    # the polygons column
    poly_mask = np.ones(n, dtype=bool)  # segmentation: [] -> an empty polygon list, not null
    poly_mask[[j for j in range(n) if seg_kind[j] in ("polygon", "empty")]] = False
    outer_offsets = np.zeros(n + 1, dtype=np.int32)
    counts_per_row = np.zeros(n, dtype=np.int64)
    counts_per_row[poly_rows] = np.diff(ann_parts_arr)
    outer_offsets[1:] = np.cumsum(counts_per_row)
    inner = pa.ListArray.from_arrays(pa.array(part_offsets_arr.astype(np.int32)), pa.array(coords))
    polygons = pa.ListArray.from_arrays(pa.array(outer_offsets), inner, mask=pa.array(poly_mask))
    for j in bad:
        areas[j] = 0
    return _Masks(rle_counts, rle_size, polygons, fmt, bad, areas)


def _one_annotation(coords, part_offsets, ann_parts, k):
    p0, p1 = ann_parts[k], ann_parts[k + 1]
    offs = part_offsets[p0: p1 + 1]
    sub = coords[offs[0]: offs[-1]]
    return sub, offs - offs[0], np.asarray([0, p1 - p0], dtype=np.int64)


def _is_plain_number(x) -> bool:
    return type(x) is int or type(x) is float


def _all_numbers(flat: list) -> bool:
    kinds = set(map(type, flat))
    return kinds <= {int, float}


def _bbox_array(flat: list, valid: list) -> pa.Array:
    n = len(valid)
    counts = np.where(np.asarray(valid, dtype=bool), 4, 0) if n else np.zeros(0, np.int64)
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(counts)
    values = pa.array(np.asarray(flat, dtype=np.float64))
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~np.asarray(valid, dtype=bool)))


def _check_keypoints(rec: dict, ctx: FileContext, cid):
    kps = rec.get("keypoints")
    nk = rec.get("num_keypoints")
    if not (type(kps) is list and all(_is_exact_num(x) for x in kps)):
        raise _Bad(f"keypoints {_short(kps)} is not a list of finite numbers")
    if len(kps) % 3:
        raise _Bad(f"keypoints has {len(kps)} numbers; expected 3 per joint (x, y, visibility)")
    expected = ctx.category_keypoints.get(cid)
    if expected and len(kps) != 3 * expected:
        raise _Bad(f"keypoints has {len(kps) // 3} joints; category {cid} names {expected}")
    if nk is not None and not _is_int(nk):
        raise _Bad(f"num_keypoints {nk!r} is not an integer")
    return nk, [float(x) for x in kps]

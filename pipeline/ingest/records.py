"""records: what validating and flattening one record needs, shared by every flatten step.

Owns ``FileContext`` (what a chunk task knows about its file), ``ImageSizes`` (image id →
height, width), ``Flat`` (a chunk's tables and rejects), ``BadValue`` and the value checks
(ids, numbers, boxes, keypoints), ``Collector`` (a bad record raises or becomes a reject
row) and ``arrow_table`` (rows → a table of a warehouse schema). Used by ``flatten``,
``encode`` and ``evaluate.detections``; imports only the shared core (errors, jsontext, schema).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pyarrow as pa

from ..errors import BadRecordError
from ..jsontext import dumps_text as _dumps
from ..defaults import OnBadRecord
from ..schema import FileKind, IdTypes, schema_for

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_MAX = int(sys.float_info.max)
EXACT = 2**53  # integers up to this magnitude are exact in float64
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
    kind: FileKind
    id_types: IdTypes = IdTypes()  # int64 | string per id space (image, annotation, category)
    on_bad_record: OnBadRecord = "error"
    # category id -> number of keypoint names (person_keypoints files)
    category_keypoints: dict = dataclasses.field(default_factory=dict)
    category_ids: frozenset | None = None
    # id space -> what decided its type, for the mixed-id-types message: "the first image's id is 'a'"
    id_origins: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of_file(cls, source_file: str, kind: FileKind, id_types: IdTypes, id_origins: dict, on_bad_record: OnBadRecord,
                categories: list | None) -> FileContext:
        """The context of a file whose category records are ``categories`` (None: it has none)."""
        cats = [c for c in categories or () if type(c) is dict]
        return cls(
            source_file=source_file, kind=kind, id_types=id_types, on_bad_record=on_bad_record,
            category_keypoints={c.get("id"): len(c["keypoints"]) for c in cats if type(c.get("keypoints")) is list},
            category_ids=None if categories is None else frozenset(
                c.get("id") for c in cats if isinstance(c.get("id"), (int, str))),
            id_origins=id_origins,
        )


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

    def lookup(self, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, heights, widths) of the ids (a list, or an int64 array for int64 ids); a
        height of -1 means the image has no usable height."""
        if self.id_type == "int64":
            given = isinstance(ids, np.ndarray)
            q = ids.astype(np.int64, copy=False) if given else np.asarray(
                [i if type(i) is int else 0 for i in ids], dtype=np.int64)
            pos = np.searchsorted(self.ids, q)
            pos_c = np.minimum(pos, max(len(self.ids) - 1, 0))
            found = (pos < len(self.ids)) & (self.ids[pos_c] == q) if len(self.ids) else np.zeros(len(q), bool)
            if not given:
                found &= np.asarray([type(i) is int for i in ids], dtype=bool)
            h = np.where(found, self.h[pos_c] if len(self.ids) else 0, -1)
            w = np.where(found, self.w[pos_c] if len(self.ids) else 0, -1)
            return found, h, w
        hw = [self.map.get(i) if type(i) is str else None for i in ids]  # a list id is no key
        found = np.asarray([x is not None for x in hw], dtype=bool)
        h = np.asarray([x[0] if x else -1 for x in hw], dtype=np.int64)
        w = np.asarray([x[1] if x else -1 for x in hw], dtype=np.int64)
        return found, h, w


# ---------------------------------------------------------------------------- checks


class BadValue(Exception):
    """Raised inside a record's validation; turned into BadRecordError or a reject."""


def is_int(v) -> bool:
    return type(v) is int and _INT64_MIN <= v <= _INT64_MAX


def is_num(v) -> bool:
    """A finite int or float; an integer beyond float64's range is not (``math.isfinite`` would raise)."""
    if type(v) is float:
        return math.isfinite(v)
    return type(v) is int and -_FLOAT_MAX <= v <= _FLOAT_MAX


def is_exact_num(v) -> bool:
    """A finite number that a float64 column holds exactly (no integer beyond 2**53)."""
    return type(v) is float and math.isfinite(v) or type(v) is int and -EXACT <= v <= EXACT


def check_id(value, ctx: FileContext, space: str, what: str, required: bool = True):
    """``value`` as an id of ``space`` (image | annotation | category), typed as the file's
    ids of that space are; an id of the other type is a bad record (mixed id types)."""
    origin = ctx.id_origins.get(space)
    mixed = f"(mixed {space} id types; {origin})" if origin else f"(mixed {space} id types)"
    if value is None:
        if required:
            raise BadValue(f"{what} is missing")
        return None
    if getattr(ctx.id_types, space) == "int64":
        if type(value) is int:
            if not is_int(value):
                raise BadValue(f"{what} {value} does not fit in a 64-bit integer")
            return value
        if type(value) is str:
            raise BadValue(f"{what} {value!r} is a string but this file's {space} ids are integers {mixed}")
        raise BadValue(f"{what} {value!r} is not an integer")
    if type(value) is str:
        return value
    if type(value) is int:
        raise BadValue(f"{what} {value} is an integer but this file's {space} ids are strings {mixed}")
    raise BadValue(f"{what} {value!r} is not a string id")


def _record_id_text(rec) -> str | None:
    if isinstance(rec, dict) and "id" in rec:
        try:
            return json.dumps(rec["id"], ensure_ascii=False)
        except (TypeError, ValueError):
            return repr(rec["id"])
    return None


class Collector:
    """Collects rows of the tables of one chunk, and the rejects."""

    def __init__(self, ctx: FileContext, section: str, first_index: int):
        self.ctx = ctx
        self.section = section
        self.first_index = first_index
        self.rejects: list[dict] = []

    def drop_bad(self, bad: dict[int, str], keep: list[int], records: list) -> list[int]:
        """Each row ``j`` of ``bad`` (a position in ``keep``) is a bad record; the rows that stay."""
        for j, problem in sorted(bad.items()):
            self.bad(keep[j], records[keep[j]], problem)
        return [j for j in range(len(keep)) if j not in bad]

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


def check_object(rec) -> dict:
    """``rec`` itself when it is a JSON object; raises ``BadValue`` naming what it is."""
    if type(rec) is not dict:
        raise BadValue(f"is a JSON {type(rec).__name__}, expected an object")
    return rec


def extra_text(rec: dict, known: tuple[str, ...]) -> str | None:
    extra = {k: v for k, v in rec.items() if k not in known}
    return _dumps(extra) if extra else None


def typed(rec: dict, key: str, ok, raw: dict):
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


def is_str(v) -> bool:
    return type(v) is str


def arrow_table(name: str, columns: dict, ctx: FileContext, first_index: int, indices: list[int]) -> pa.Table:
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


NUMBER_TYPES = frozenset((int, float))  # what JSON numbers parse to (bool is neither)


def is_bbox(v) -> bool:
    return type(v) is list and len(v) == 4 and all(is_num(x) for x in v)


def short(v, limit: int = 80) -> str:
    """``v`` as JSON text for a message, cut to ``limit`` characters."""
    text = _dumps(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_keypoints(kps, cid, ctx: FileContext, *, detection: bool = False) -> list[float]:
    """The keypoints of an annotation (or, with ``detection``, of a detection) as floats.

    Both: a list of finite numbers, 3 per joint, as many joints as category ``cid`` names
    (when it names any). An annotation's may be empty and must be numbers a float64 holds
    exactly (the column keeps the source); a detection's, as pycocotools' ``loadRes`` takes
    them, are any finite numbers, not empty, the third of each triple a visibility or a score.
    """
    if detection:
        ok = type(kps) is list and bool(kps) and all(map(is_num, kps))
        what, third = "a non-empty list of finite numbers", "visibility or score"
    else:
        ok = type(kps) is list and all(map(is_exact_num, kps))
        what, third = "a list of finite numbers", "visibility"
    if not ok:
        raise BadValue(f"keypoints {short(kps)} is not {what}")
    if len(kps) % 3:
        raise BadValue(f"keypoints has {len(kps)} numbers; expected 3 per joint (x, y, {third})")
    expected = ctx.category_keypoints.get(cid)
    if expected and len(kps) != 3 * expected:
        raise BadValue(f"keypoints has {len(kps) // 3} joints; category {cid} names {expected}")
    return [float(x) for x in kps]

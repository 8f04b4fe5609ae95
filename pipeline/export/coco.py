"""coco: the subset as COCO JSON files, one per (output split, kind), in the official layout.

Input: a connection prepared by ``select.build_subset``. Output:
``<out>/annotations/<kind>_<split>.json`` (instances, person_keypoints, captions, stuff,
image_info: only the kinds the subset has).

Guarantees: exporting everything gives back each source file, ``json.load``-equal: the
top-level keys in the source order (from the stored ``document``, unknown keys included),
records in the source order (``record_index``), unknown record keys (``extra``) and values
the typed columns could not hold (``raw``) restored, polygons as polygons, uncompressed
crowd RLE as the same run lengths, compressed RLE as the same string, and for the
official files each number the int or float it was (``_area_bbox_values``). Records are built
per batch of rows (DuckDB's own for a small section, Arrow's for a large one) and written with
orjson straight to the file, so memory is bounded by the batch, not the subset. When several source files land in one output file (``split_ratio``)
the first file's top level is used, categories and licenses are merged by id and an
annotation id that two files share is an error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

from ..jsontext import dumps, loads
from .options import ExportError
from .select import FILTER_CATEGORIES, arrow_batches, section_categories

log = logging.getLogger(__name__)

BATCH_ROWS = 20_000
# a section of at most this many rows is read without Arrow (see ``_batches``)
PLAIN_ROWS = 20_000
RECORD_SECTIONS = ("images", "annotations", "categories", "licenses")

# the key order of the official COCO files; unknown keys (extra) follow
IMAGE_KEYS = ("license", "file_name", "coco_url", "height", "width", "date_captured", "flickr_url", "id")
INSTANCE_KEYS = ("segmentation", "area", "iscrowd", "image_id", "bbox", "category_id", "id")
KEYPOINT_KEYS = ("segmentation", "num_keypoints", "area", "iscrowd", "keypoints", "image_id", "bbox",
                 "category_id", "id")
CAPTION_KEYS = ("image_id", "id", "caption")
CATEGORY_KEYS = ("supercategory", "id", "name", "keypoints", "skeleton")
LICENSE_KEYS = ("url", "id", "name")


# ---------------------------------------------------------------------------- records


def _records(batch: Batch, keys: tuple[str, ...], values: dict | None = None) -> list[dict]:
    """One dict per row: ``keys`` from the columns (or ``values`` overrides), then ``raw``, ``extra``."""
    n = batch.num_rows
    cols = [values[k] if values and k in values else batch.values(k) for k in keys]
    raws = batch.values("raw")
    extras = batch.values("extra")
    out = []
    for i in range(n):
        raw = raws[i]
        raw = loads(raw) if raw is not None else None
        rec = {}
        for k, col in zip(keys, cols):
            v = col[i]
            if v is not None:
                rec[k] = v
            elif raw is not None and k in raw:
                rec[k] = raw[k]
        if raw is not None:
            for k, v in raw.items():
                rec.setdefault(k, v)
        extra = extras[i]
        if extra is not None:
            rec.update(loads(extra))
        out.append(rec)
    return out


def segmentation_values(batch: Batch, whole_as_int: bool = False) -> list:
    """The source's ``segmentation`` per row (None: the source had none); with ``whole_as_int``
    each whole polygon coordinate is an int (a person_keypoints file's rule, see ``_area_bbox_values``)."""
    fmts = batch.values("segmentation_format")
    polys = batch.values("polygons")
    if whole_as_int:
        batch.whole_coordinates_as_ints("polygons", polys)
    counts = batch.values("rle_counts")
    sizes = batch.values("rle_size")
    out = []
    for fmt, poly, c, size in zip(fmts, polys, counts, sizes):
        if fmt == "polygon":
            out.append(poly)
        elif fmt == "uncompressed_rle":
            from .. import masks  # the mask codec (numpy, pycocotools' C code) only for crowd RLE

            out.append({"counts": masks.counts_to_list(c), "size": size})
        elif fmt == "rle":
            out.append({"counts": c, "size": size})
        else:
            out.append(poly)  # [] when the source said `segmentation: []`, else None
    return out


def _integral(x: float | None) -> int | float | None:
    """``x`` as an int when it is a whole number a double holds exactly, else unchanged."""
    return int(x) if x is not None and x.is_integer() and abs(x) <= 2**53 else x


def _keypoint_values(batch: Batch) -> list:
    # stored as doubles; COCO writes integer pixel positions and visibility flags as ints
    return [None if kp is None else [_integral(x) for x in kp] for kp in batch.values("keypoints")]


# `area` and `bbox` are stored as doubles, so a source's 9476 and 9476.0 read back the same.
# The official COCO files tell them apart by rules of their own, which this gives back
# (coco-mini, cut from them, holds every case; tests/export/test_coco.py checks each number's
# type):
# - a crowd annotation (iscrowd 1): its area is the mask's pixel count and its bbox the
#   mask's pixel edges, ints in every file (`"area": 104752, "bbox": [1, 1, 638, 267]`);
# - a person_keypoints file writes every whole number as an int, as it does its keypoints
#   (`"bbox": [464.46, 0, 175.54, 423]`, polygons with `0` and `640`);
# - any other annotation keeps its floats: an instances file writes that same box as
#   `[464.46, 0.0, 175.54, 423.0]`, and a polygon's area is a float even when whole.
# A crowd flag the column could not hold (`"iscrowd": true`, kept in `raw`) counts as not crowd.
def _area_bbox_values(batch: Batch, kind: str) -> tuple[list, list]:
    areas = batch.values("area")
    boxes = batch.values("bbox")
    if kind == "person_keypoints":
        rows = range(batch.num_rows)
    else:
        rows = [i for i, crowd in enumerate(batch.values("iscrowd")) if crowd == 1]
    for i in rows:
        areas[i] = _integral(areas[i])
        if boxes[i] is not None:
            boxes[i] = [_integral(x) for x in boxes[i]]
    return areas, boxes


def _whole_coordinates_as_ints(column, polygons: list) -> None:
    """In place: each whole coordinate of ``polygons`` (``column.to_pylist()``, an Arrow array) as an int.

    numpy finds them over the batch's flat coordinates, so Python touches only those few.
    """
    import numpy as np
    import pyarrow.compute as pc

    rings = pc.list_flatten(column)
    coords = pc.list_flatten(rings).to_numpy(zero_copy_only=False)
    whole = np.flatnonzero((coords == np.trunc(coords)) & (np.abs(coords) <= 2**53))
    if not whole.size:
        return
    lengths = pc.fill_null(pc.list_value_length(rings), 0).to_numpy(zero_copy_only=False)
    starts = np.cumsum(lengths) - lengths
    # an empty ring starts where the next one does; side="right" picks the one holding i
    ring_of = np.searchsorted(starts, whole, side="right") - 1
    ring_lists = [ring for poly in polygons if poly is not None for ring in poly]
    for r, i in zip(ring_of.tolist(), (whole - starts[ring_of]).tolist()):
        ring_lists[r][i] = int(ring_lists[r][i])


def image_records(batch: Batch) -> list[dict]:
    return _records(batch, IMAGE_KEYS)


def annotation_records(batch: Batch, kind: str, cmap=None) -> list[dict]:
    """Records of annotation rows; with a ``ClassMap`` their category ids are the target ids."""
    if kind == "captions":
        return _records(batch, CAPTION_KEYS)
    values = {"segmentation": segmentation_values(batch, whole_as_int=kind == "person_keypoints")}
    values["area"], values["bbox"] = _area_bbox_values(batch, kind)
    if cmap is not None:
        values["category_id"] = [cmap.of_source.get(c, c) for c in batch.values("category_id")]
    if kind == "person_keypoints":
        values["keypoints"] = _keypoint_values(batch)
        return _records(batch, KEYPOINT_KEYS, values)
    return _records(batch, INSTANCE_KEYS, values)


def category_records(batch: Batch) -> list[dict]:
    return _records(batch, CATEGORY_KEYS)


def mapped_categories(records: list[dict], cmap, emitted: set) -> list[dict]:
    """Category records through a ``ClassMap``: dropped ones left out, each target once.

    A target takes the record of its first source category (supercategory, keypoints,
    skeleton) with the target's id and name, at that category's place in the file.
    """
    names = {t.id: t.name for t in cmap.targets}
    out = []
    for rec in records:
        tid = cmap.of_source.get(rec.get("id"))
        if tid is None or tid in emitted:
            continue
        emitted.add(tid)
        out.append({**rec, "id": tid, "name": names[tid]})
    return out


def license_records(batch: Batch) -> list[dict]:
    return _records(batch, LICENSE_KEYS)


# ---------------------------------------------------------------------------- queries

# the rows of one source file ($2, $3) that go to one output split ($1): the join is on the
# id alone, the subquery having fixed split and file, which spares hashing two strings for
# every row of the table
_IMAGE_SQL = (
    "SELECT r.* FROM raw_images AS r "
    "SEMI JOIN (SELECT id FROM export_images WHERE out_split = $1 AND split = $2 AND source_file = $3) AS e "
    "ON e.id = r.id WHERE r.split = $2 AND r.source_file = $3 ORDER BY r.record_index"
)
# {categories}: nothing, or a filter on the rows' category ids ($4, ``select.section_categories``)
# that lets the scan skip the row groups of other categories
_ANNOTATION_SQL = (
    "SELECT r.* FROM raw_annotations AS r "
    "SEMI JOIN (SELECT id FROM export_annotations WHERE out_split = $1 AND split = $2 AND source_file = $3) AS e "
    "ON e.id = r.id WHERE r.split = $2 AND r.source_file = $3{categories} ORDER BY r.record_index"
)
# person_keypoints files: the same, with each annotation's keypoints
_KEYPOINT_SQL = (
    "SELECT r.*, k.num_keypoints, k.keypoints FROM raw_annotations AS r "
    "SEMI JOIN (SELECT id FROM export_annotations WHERE out_split = $1 AND split = $2 AND source_file = $3) AS e "
    "ON e.id = r.id "
    "LEFT JOIN raw_keypoints AS k "
    "ON k.split = r.split AND k.source_file = r.source_file AND k.annotation_id = r.id "
    "WHERE r.split = $2 AND r.source_file = $3{categories} ORDER BY r.record_index"
)
_CATEGORY_FILTER = " AND list_contains($4, r.category_id)"
_CAPTION_SQL = (
    "SELECT r.* FROM raw_captions AS r "
    "SEMI JOIN (SELECT id FROM export_captions WHERE out_split = $1 AND split = $2 AND source_file = $3) AS e "
    "ON e.id = r.id WHERE r.split = $2 AND r.source_file = $3 ORDER BY r.record_index"
)
_SMALL_SQL = "SELECT * FROM raw_{table} WHERE split = ? AND source_file = ? ORDER BY record_index"


class Batch:
    """Up to ``BATCH_ROWS`` rows of a query, a column's Python values at a time (``values``):
    an Arrow record batch's, or DuckDB's own rows."""

    def __init__(self, names: list[str], rows: list[tuple] | None = None, arrow=None):
        self.names, self._rows, self._arrow = names, rows, arrow
        self.num_rows = len(rows) if arrow is None else arrow.num_rows

    def values(self, name: str) -> list:
        if self._arrow is not None:
            return self._arrow.column(name).to_pylist()
        i = self.names.index(name)
        return [r[i] for r in self._rows]

    def whole_coordinates_as_ints(self, name: str, polygons: list) -> None:
        """In place: each whole coordinate of ``polygons`` (``values(name)``) as an int."""
        if self._arrow is not None:
            _whole_coordinates_as_ints(self._arrow.column(name), polygons)
            return
        for poly in polygons:
            for ring in poly or ():
                if ring is not None:
                    ring[:] = [_integral(x) for x in ring]


def _batches(con, sql: str, params: list, expected: int | None = None) -> Iterator[Batch]:
    """The rows of ``sql`` in batches; ``expected``: how many there are (None: a few).

    Up to ``PLAIN_ROWS`` rows come as DuckDB's Python values (for these column types the
    values Arrow's ``to_pylist`` gives), which spares importing pyarrow and NumPy: a fifth
    of a second, most of the time of a small subset's export. More come through Arrow,
    whose conversion is the faster one per row.
    """
    if expected is not None and expected > PLAIN_ROWS:
        for batch in arrow_batches(con, sql, params, BATCH_ROWS):
            yield Batch(batch.schema.names, arrow=batch)
        return
    result = con.execute(sql, params)
    names = [d[0] for d in result.description]
    while True:
        rows = result.fetchmany(BATCH_ROWS)
        if not rows:
            return
        yield Batch(names, rows)


def annotation_query(con, kind: str, params: list) -> tuple[str, list]:
    """The SQL and parameters that fetch the annotation rows of one output file's section from
    one source file (``params``: out_split, split, source_file), in source order.

    Instances and keypoints rows are also filtered on the categories of the rows picked
    (``select.section_categories``), which DuckDB checks against each row group's min/max
    statistics: a subset of a few categories decodes only their row groups.
    """
    if kind == "captions":
        return _CAPTION_SQL, params
    sql = _KEYPOINT_SQL if kind == "person_keypoints" else _ANNOTATION_SQL
    categories = section_categories(con, params)
    if not categories or len(categories) > FILTER_CATEGORIES:
        # an annotation without category id, no row, or so many categories that the groups
        # skipped would not pay for checking each row against the list: no filter
        return sql.format(categories=""), params
    return sql.format(categories=_CATEGORY_FILTER), params + [categories]


def _expected(con, table: str, params: list) -> int:
    """The rows of an ``export_*`` table that one output file's section takes from one source file."""
    return con.execute(f"SELECT count(*) FROM {table} WHERE out_split = $1 AND split = $2 AND source_file = $3",
                       params).fetchall()[0][0]


# ---------------------------------------------------------------------------- writing


class _ArrayWriter:
    """Writes records into an open JSON array, ``[`` and ``]`` included."""

    def __init__(self, f):
        self.f = f
        self.count = 0

    def __enter__(self):
        self.f.write(b"[")
        return self

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        data = dumps(records)
        if self.count:
            self.f.write(b",")
        self.f.write(data[1:-1])
        self.count += len(records)

    def __exit__(self, *exc):
        self.f.write(b"]")


def write_file(con, path: str, out_split: str, kind: str, sources: list[tuple[str, str, str]],
               cmap=None) -> dict[str, int]:
    """One output JSON file from its source files [(split, source_file, document)]."""
    doc = loads(sources[0][2])
    if not isinstance(doc, dict):
        raise ExportError(f"{sources[0][1]}: the stored top-level document is not a JSON object")
    merged = len(sources) > 1
    counts: dict[str, int] = {}
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(b"{")
        for i, (key, value) in enumerate(doc.items()):
            if i:
                f.write(b",")
            f.write(dumps(key) + b":")
            if key not in RECORD_SECTIONS or not isinstance(value, list):
                f.write(dumps(value))
                continue
            with _ArrayWriter(f) as out:
                _write_section(con, out, key, out_split, kind, sources, merged, cmap)
            counts[key] = out.count
        f.write(b"}")
    os.replace(tmp, path)
    return counts


def _write_section(con, out: _ArrayWriter, key, out_split, kind, sources, merged, cmap=None) -> None:
    seen: set | None = set() if merged else None
    emitted: set = set()
    for split, source_file, _ in sources:
        params = [out_split, split, source_file]
        if key == "images":
            build: Callable = image_records
            batches = _batches(con, _IMAGE_SQL, params, _expected(con, "export_images", params))
        elif key == "annotations":
            def build(b, kind=kind):
                return annotation_records(b, kind, cmap)
            table = "export_captions" if kind == "captions" else "export_annotations"
            batches = _batches(con, *annotation_query(con, kind, params), _expected(con, table, params))
        elif key == "categories" and cmap is not None:
            def build(b):
                return mapped_categories(category_records(b), cmap, emitted)
            batches = _batches(con, _SMALL_SQL.format(table=key), [split, source_file])
        else:
            build = category_records if key == "categories" else license_records
            batches = _batches(con, _SMALL_SQL.format(table=key), [split, source_file])
        for batch in batches:
            records = build(batch)
            if seen is not None:
                records = _dedupe(records, seen, key, source_file)
            out.write(records)


def _dedupe(records: list[dict], seen: set, key: str, source_file: str) -> list[dict]:
    """Merging files: images, categories, licenses keep the first of an id; annotations must not repeat."""
    kept = []
    for rec in records:
        rid = rec.get("id")
        hashable = rid if isinstance(rid, (int, str)) else dumps(rid)
        if hashable in seen:
            if key == "annotations":
                raise ExportError(
                    f"{source_file}: annotation id={rid!r} also comes from another source file of the same "
                    "output split; export the splits separately (without --split-ratio)"
                )
            continue
        seen.add(hashable)
        kept.append(rec)
    return kept


def write_coco(con, out: str, file_rows: list[tuple], cmap=None) -> dict[str, dict[str, int]]:
    """Every output file; returns {relative path: {section: records}}.

    ``cmap`` (a ``ClassMap``, None for the source categories unchanged) renames, merges and
    drops categories; the dropped ones' annotations are already out of the subset.
    """
    groups: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for out_split, kind, split, source_file, document in file_rows:
        groups.setdefault((out_split, kind), []).append((split, source_file, document))
    ann_dir = os.path.join(out, "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    report = {}
    for (out_split, kind), sources in groups.items():
        rel = f"annotations/{kind}_{out_split}.json"
        report[rel] = write_file(con, os.path.join(out, rel), out_split, kind, sources, cmap)
        log.debug("wrote %s: %s", rel, report[rel])
    return report

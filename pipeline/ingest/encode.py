"""encode: a chunk's segmentations → its mask columns, in one batch per chunk.

Input: each annotation's segmentation and its image's height and width. Output:
``classify_segmentation`` (polygon | rle | uncompressed_rle | none | empty, or a
``BadValue`` naming the problem) and ``encode_masks`` → ``Masks``: the Arrow columns
rle_counts, rle_size, mask_area, polygons and segmentation_format in the table's types,
and the rows whose mask failed validation. Polygons are drawn and RLEs checked by
``masks``' batch encoders, never one call per mask, and the columns are assembled from
their buffers with index arrays, without a Python object per polygon row.
Imports ``masks`` and ``records``; used by ``flatten`` and ``evaluate.detections``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa

from .. import masks
from .records import NUMBER_TYPES, BadValue, is_int, is_num, short
from ..schema import SegmentationFormat


def classify_segmentation(rec: dict, h: int, w: int) -> tuple[SegmentationFormat | Literal["empty"], object]:
    """(kind, value) of an annotation's segmentation; raises BadValue for malformed ones."""
    if "segmentation" not in rec or rec["segmentation"] is None:
        return "none", None
    seg = rec["segmentation"]
    if type(seg) is list:
        if not seg:
            return "empty", None
        if all(type(p) is list for p in seg):
            if h <= 0 or w <= 0:
                raise BadValue("has polygons but its image has no height/width to draw them on")
            if not {type(x) for p in seg for x in p} <= NUMBER_TYPES:  # before numpy or C sees them
                raise BadValue("polygon has a coordinate that is not a number")
            return "polygon", seg
        if all(type(p) in (int, float) for p in seg):
            raise BadValue("segmentation is a flat list of numbers; expected a list of polygons [[x1, y1, x2, y2, ...]]")
        raise BadValue("segmentation list mixes polygons and other values")
    if type(seg) is dict:
        counts, size = seg.get("counts"), seg.get("size")
        if not (type(size) is list and len(size) == 2 and all(is_int(x) and x >= 0 for x in size)):
            raise BadValue(f"RLE size {short(size)} is not [height, width]")
        if h > 0 and (size[0], size[1]) != (h, w):
            if (size[1], size[0]) == (h, w):
                raise BadValue(f"RLE size {size} is [width, height]; the image is {h}x{w} (height x width)")
            raise BadValue(f"RLE size {size} differs from the image's [height, width] [{h}, {w}]")
        if type(counts) is list:
            return "uncompressed_rle", (counts, size)
        if type(counts) is str:
            if counts.startswith(("b'", 'b"')):
                raise BadValue("RLE counts is a Python bytes repr (b'...'); decode the bytes to str before json.dump")
            return "rle", (counts, size)
        raise BadValue(f"RLE counts {short(counts)} is neither a string nor a list of integers")
    raise BadValue(f"segmentation {short(seg)} is neither polygons nor an RLE object")


# segmentation kinds as the small codes ``encode_masks`` takes, and the format each stores
KINDS: tuple[str, ...] = ("polygon", "rle", "uncompressed_rle", "none", "empty")
KIND_CODE = {k: np.uint8(i) for i, k in enumerate(KINDS)}
POLYGON, RLE, UNCOMPRESSED, NONE, EMPTY = range(len(KINDS))
# by code; Python strings until a chunk is encoded: pyarrow's first conversion imports pandas
# (0.5 s), which the process that only scans and commits never needs
_FORMATS = ("polygon", "rle", "uncompressed_rle", "none", "none")


class MaskRows:
    """The segmentations of a chunk's kept records, gathered row by row for ``encode_masks``."""

    def __init__(self):
        self.kind: list[str] = []  # per kept row: polygon | rle | uncompressed_rle | none | empty
        self.value: list = []
        self.heights: list[int] = []
        self.widths: list[int] = []

    def append(self, kind: str, value, height: int, width: int) -> None:
        self.kind.append(kind)
        self.value.append(value)
        self.heights.append(height)
        self.widths.append(width)

    def encode(self) -> Masks:
        codes = np.array([KIND_CODE[k] for k in self.kind], np.uint8)
        return encode_masks(codes, self.value, self.heights, self.widths)


class Masks(NamedTuple):
    """The mask columns of a chunk's annotations (Arrow, in the table's types), and the
    rows whose mask is bad (null in counts, size and area)."""

    counts: pa.Array  # string: compressed counts, null where there is no mask
    size: pa.Array  # list<int32>: [h, w], null where there is no mask
    polygons: pa.Array  # list<list<double>>, null where the source was not polygons
    fmt: pa.Array  # string, not null: segmentation_format
    bad: dict  # {row: problem}
    area: pa.Array  # int64: foreground pixels, null where there is no mask

    def take(self, rows) -> Masks:
        sel = pa.array(np.asarray(rows, dtype=np.int64), pa.int64())
        return Masks(self.counts.take(sel), self.size.take(sel), self.polygons.take(sel), self.fmt.take(sel), {},
                     self.area.take(sel))


def encode_masks(kinds, seg_value, heights, widths, poly=None) -> Masks:
    """Encode every mask of a chunk; polygons in one batch, validated once, with areas.

    ``kinds``: the code (``KIND_CODE``) of each row's ``classify_segmentation`` kind, as a
    uint8 array; ``seg_value``: its value, read only for RLE rows and, without ``poly``,
    polygon rows. ``poly`` = (flat coordinates: a list or a float64 array, part offsets,
    annotation part offsets) of the polygon rows, when the caller already gathered them.
    Polygon coordinates are numbers (ints or floats): ``classify_segmentation`` and the fast
    path refuse the rows they are not. The columns are built from the encoders' buffers and
    index arrays: a Python object per row only for RLE rows (they arrive as Python objects).
    """
    kinds = np.asarray(kinds, dtype=np.uint8)
    n = len(kinds)
    hs = np.array(heights, dtype=np.int64).reshape(n)
    ws = np.array(widths, dtype=np.int64).reshape(n)
    areas = np.zeros(n, np.int64)
    valid = np.zeros(n, dtype=bool)  # rows that get a mask
    bad: dict[int, str] = {}
    poly_rows = np.flatnonzero(kinds == POLYGON)
    rle_rows = np.flatnonzero((kinds == RLE) | (kinds == UNCOMPRESSED))

    coords, part_offsets, ann_parts = _polygon_input(poly, poly_rows, seg_value, bad)
    poly_counts = pa.nulls(0, pa.string())
    if len(poly_rows):
        enc = masks.encode_polygon_batch(coords, part_offsets, ann_parts, hs[poly_rows], ws[poly_rows])
        for k, problem in enc.problems.items():
            bad.setdefault(int(poly_rows[k]), problem)
        areas[poly_rows] = enc.areas
        valid[poly_rows] = enc.counts.is_valid().to_numpy(zero_copy_only=False)
        poly_counts = enc.counts
    rle_counts = pa.nulls(0, pa.string())
    if len(rle_rows):
        rows = rle_rows.tolist()
        sizes = [seg_value[j][1] for j in rows]
        enc = masks.encode_rle_batch([seg_value[j][0] for j in rows], [(s[0], s[1]) for s in sizes])
        for k, problem in enc.problems.items():
            bad[rows[k]] = problem
        ok = enc.counts.is_valid().to_numpy(zero_copy_only=False)
        # the size as written (the image's whenever the image has one); a bad one is not kept
        written = np.array([sizes[k] for k in np.flatnonzero(ok).tolist()], np.int64).reshape(-1, 2)
        hs[rle_rows[ok]], ws[rle_rows[ok]] = written[:, 0], written[:, 1]
        areas[rle_rows] = enc.areas
        valid[rle_rows] = ok
        rle_counts = enc.counts
    if bad:
        valid[list(bad)] = False
        areas[list(bad)] = 0

    if len(poly_rows) == n and valid.all():  # the common chunk: the kernel's column as it is
        counts = poly_counts
    else:  # gather by row from [polygon rows..., RLE rows...]; a null index gives null
        at = np.zeros(n, np.int64)
        at[poly_rows] = np.arange(len(poly_rows))
        at[rle_rows] = len(poly_rows) + np.arange(len(rle_rows))
        counts = pa.concat_arrays([poly_counts, rle_counts]).take(pa.array(at, mask=~valid))
    size_offsets = np.zeros(n + 1, np.int32)
    size_offsets[1:] = np.cumsum(valid * 2)
    size_values = np.stack([hs[valid], ws[valid]], axis=1).astype(np.int32).reshape(-1)
    size = pa.ListArray.from_arrays(pa.array(size_offsets), pa.array(size_values),
                                    mask=None if valid.all() else pa.array(~valid))
    area = pa.array(areas, pa.int64(), mask=None if valid.all() else ~valid)
    polygons = _polygons_column(kinds, poly_rows, coords, part_offsets, ann_parts)
    return Masks(counts, size, polygons, pa.array(_FORMATS, pa.string()).take(pa.array(kinds)), bad, area)


def _polygon_input(poly, poly_rows: np.ndarray, seg_value: list, bad: dict):
    """(float64 coordinates, part offsets, annotation part offsets) of the polygon rows;
    rows with an integer beyond float64's range go to ``bad`` (drawn as zeros)."""
    if poly is not None:
        flat, part_offsets, ann_parts = poly
    else:
        flat = []
        part_offsets = [0]
        ann_parts = [0]
        for j in poly_rows.tolist():
            for part in seg_value[j]:
                flat.extend(part)
                part_offsets.append(len(flat))
            ann_parts.append(len(part_offsets) - 1)
    try:
        coords = np.asarray(flat, dtype=np.float64) if len(flat) else np.zeros(0, np.float64)
    except OverflowError:  # an integer beyond float64's range: those rows are bad, drawn as zeros
        at = [i for i, x in enumerate(flat) if not is_num(x)]
        part = np.searchsorted(np.asarray(part_offsets), at, side="right") - 1
        for k in set((np.searchsorted(np.asarray(ann_parts), part, side="right") - 1).tolist()):
            bad[int(poly_rows[k])] = "polygon has a coordinate beyond the range of a 64-bit float"
        coords = np.array([x if is_num(x) else 0.0 for x in flat], dtype=np.float64)
    return coords, np.asarray(part_offsets, dtype=np.int64), np.asarray(ann_parts, dtype=np.int64)


def _polygons_column(kinds, poly_rows, coords, part_offsets, ann_parts) -> pa.Array:
    """list<list<double>> from the flat arrays; segmentation [] is an empty list, not null."""
    n = len(kinds)
    counts_per_row = np.zeros(n, dtype=np.int64)
    counts_per_row[poly_rows] = np.diff(ann_parts)
    outer_offsets = np.zeros(n + 1, dtype=np.int32)
    outer_offsets[1:] = np.cumsum(counts_per_row)
    inner = pa.ListArray.from_arrays(pa.array(part_offsets.astype(np.int32)), pa.array(coords))
    poly_mask = (kinds != POLYGON) & (kinds != EMPTY)
    return pa.ListArray.from_arrays(pa.array(outer_offsets), inner, mask=pa.array(poly_mask))


def gather_polygons(geometry, listed: list[int], seg_value: list):
    """``encode_masks``' ``poly`` for the polygon rows in row order: the rows of ``geometry``
    (a ``parse.Geometry`` or None) and the ``listed`` rows, whose polygons are the lists in
    ``seg_value``; None when a listed coordinate is not a number or beyond float64."""
    flat: list = []
    part_offsets, ann_parts = [0], [0]
    for i in listed:
        for p in seg_value[i]:
            flat.extend(p)
            part_offsets.append(len(flat))
        ann_parts.append(len(part_offsets) - 1)
    if flat and not set(map(type, flat)) <= NUMBER_TYPES:
        return None
    try:
        listed_coords = np.array(flat, dtype=np.float64)
    except OverflowError:
        return None
    if geometry is None:
        return listed_coords, np.array(part_offsets, np.int64), np.array(ann_parts, np.int64)
    if not listed:
        return geometry.coords, geometry.part_offsets, geometry.ann_parts
    # both kinds in one chunk (rare): the rows' parts in row order, gathered by index arrays
    listed_po, listed_ap = np.array(part_offsets, np.int64), np.array(ann_parts, np.int64)
    part_start = np.concatenate([geometry.part_offsets[:-1], listed_po[:-1] + len(geometry.coords)])
    part_len = np.concatenate([np.diff(geometry.part_offsets), np.diff(listed_po)])
    ann_start = np.concatenate([geometry.ann_parts[:-1], listed_ap[:-1] + (len(geometry.part_offsets) - 1)])
    ann_len = np.concatenate([np.diff(geometry.ann_parts), np.diff(listed_ap)])
    order = np.argsort(np.concatenate([geometry.rows, np.asarray(listed, np.int64)]), kind="stable")
    parts = _ranges(ann_start[order], ann_len[order])  # every part, in row order
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum(part_len[parts], out=offsets[1:])
    ann = np.zeros(len(order) + 1, np.int64)
    np.cumsum(ann_len[order], out=ann[1:])
    coords = np.concatenate([geometry.coords, listed_coords])
    return coords[_ranges(part_start[parts], part_len[parts])], offsets, ann


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices starts[k], ..., starts[k] + lengths[k] - 1 of every k, one after another."""
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


def bbox_values(records: list, geometry) -> np.ndarray | None:
    """The bbox numbers of every record, 4 per row in one float64 array: from ``geometry`` (a
    ``parse.Geometry`` or None) where it has them, else from the records' lists; None when a
    record's bbox is not a list of 4 numbers or holds an integer beyond float64."""
    n = len(records)
    if geometry is not None and len(geometry.box_rows) == n:
        return geometry.boxes.reshape(-1)
    rest = range(n)
    if geometry is not None and len(geometry.box_rows):
        listed = np.ones(n, dtype=bool)
        listed[geometry.box_rows] = False
        rest = np.flatnonzero(listed).tolist()
    bboxes = [records[i].get("bbox") for i in rest]
    if set(map(type, bboxes)) != {list} or set(map(len, bboxes)) != {4}:
        return None
    bflat = [x for b in bboxes for x in b]
    if not set(map(type, bflat)) <= NUMBER_TYPES:
        return None
    try:
        listed_np = np.array(bflat, dtype=np.float64)
    except OverflowError:
        return None
    if geometry is None or not len(geometry.box_rows):
        return listed_np
    out = np.empty((n, 4), np.float64)
    out[geometry.box_rows] = geometry.boxes
    out[rest] = listed_np.reshape(-1, 4)
    return out.reshape(-1)


def bbox_array(flat: list, valid: list) -> pa.Array:
    n = len(valid)
    counts = np.where(np.asarray(valid, dtype=bool), 4, 0) if n else np.zeros(0, np.int64)
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(counts)
    values = pa.array(np.asarray(flat, dtype=np.float64))
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~np.asarray(valid, dtype=bool)))


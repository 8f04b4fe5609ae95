"""Mask codec: COCO segmentations to compressed RLE counts, byte for byte as pycocotools.

Input: polygons (batches of flat coordinate buffers), uncompressed RLE (lists of run
lengths), compressed RLE strings and binary masks. Output: the compressed counts string
stored in ``rle_counts`` (an ASCII ``str``), and area, bbox and pixels computed from such
strings (their IoU is ``pipeline.iou``). Guarantee: for valid input the string equals what
pycocotools 2.0.x ``COCO.annToRLE(ann)['counts']`` gives for the same annotation and image
size; invalid input raises ``InvalidMask`` (what is wrong, and for batches which item)
before any pycocotools C code sees it.

The RLE format
--------------
A binary mask of h x w pixels is read column by column (Fortran order: down the first
column, then down the second, ...) and stored as the lengths of its constant runs,
alternating zeros and ones and always starting with zeros, so M = [0 0 1 1 1 0 1] gives
[2, 3, 1, 1] and M = [1 1 1 1 1 1 0] gives [0, 6, 1]. Runs at even positions count zeros,
runs at odd positions count ones: the area is the sum of the odd runs and all runs sum to
h*w. The size of an RLE grows with the number of boundaries in the mask, not its area, so
area, union, intersection and iou are computed on the runs without decoding.

The compressed string is a variant of LEB128. From the fourth run on (index i > 2) a run
is stored as its difference to the run two places earlier (the same colour in the
previous column of a simple shape, so the numbers stay small). Each number is written as
signed little-endian groups of 5 bits, one character per group: bit 0x20 says another
character of the same number follows, bit 0x10 of the last character is the sign, and 48
is added so every character is printable, '0' (48) to 'o' (111). Examples:
[2, 3, 1, 1] -> "231N" (the last number is 1 - 3 = -2), [0, 6, 1] -> "061",
[5, 20, 3, 40, 2] -> "5d03d0O" (20 needs two characters because its bit 0x10 is set).

How it is computed
------------------
Polygons and uncompressed RLE are encoded by ``pipeline.rlekernel``, a C extension built at
install time that works on a whole batch of flat arrays without the GIL (about 4x faster
than pycocotools' own C functions on COCO polygons; ``_rlekernel.c`` explains why it is
exact, and the tests hold it to pycocotools on every coco-mini annotation and on fuzzed
polygons). Strings are decoded and measured by pycocotools' own C code (``rleFrString``,
``rleDecode``, ``rleEncode``, ``rleArea``, ``rleToBbox``), called through ctypes on numpy
buffers (``pipeline.rle`` holds that binding and the string parser). Where the extension
was not built (a source tree used without installing), polygons go through pycocotools'
``rleFrPoly``, ``rleMerge`` and ``rleToString`` the same way: exact by construction,
without pycocotools' per-object Python work (its polygon path encodes every part to a
string, parses it back, merges and encodes again). Two C functions are fenced off:
``rleFrString`` reads past the end of a string cut in the middle of a number, so strings
are checked byte by byte first; ``rleToString`` reserves 6 bytes per run and writes one
byte past them when every number needs 6 characters, so it is only used below 2**24 pixels
(numbers then fit in 5) and vectorised numpy builds the string otherwise, as it does for
uncompressed RLE without the extension (the tests hold both to pycocotools). If
pycocotools' extension does not export the C symbols, its slower Python API is used instead
(same results).

Limits, each chosen to keep the C code inside what it handles correctly:

- ``MAX_PIXELS`` = 2**29 - 1 pixels per image: every run and every delta then fits in the
  6 characters per number pycocotools decodes exactly (7-character numbers overflow its
  C ``int`` shifts).
- coordinates within +-``coordinate_bound(h, w)`` = 4 * max(h, w) + 10000 (at most 1e8):
  ``rleFrPoly`` converts 5 * coordinate to a C ``int``, which overflows past about 2e8,
  and anything that far outside the image is a data error, not a shape.
- ``MAX_OUTLINE_POINTS`` per polygon part: ``rleFrPoly`` allocates 16 bytes for every point
  of the outline traced at 5x resolution, so a zig-zag of far-apart vertices could take
  gigabytes (2**24 points is 256 MiB, an outline of 3.3 million pixels).
- ``rleMerge`` allocates 4 bytes per image pixel to join the parts of a polygon (256 MiB
  for a 8192 x 8192 image, 2 GiB at ``MAX_PIXELS``); single parts skip it.
- A part of exactly 4 numbers is rejected: pycocotools reads a first part of length 4 as
  a box [x, y, w, h] and any other as a 2-point polygon, so its meaning is ambiguous.
"""

from __future__ import annotations

import ctypes
import logging
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from pipeline import rle, rlekernel
from pipeline.errors import InvalidMask

log = logging.getLogger(__name__)

MAX_PIXELS = rle.MAX_PIXELS
MAX_OUTLINE_POINTS = 2**24
# Below this many pixels every number of a counts string fits in 5 characters, so the 6
# bytes per run that rleToString allocates always hold the string and its final NUL.
_C_STRING_PIXELS = rle.C_STRING_PIXELS
_COORD_MARGIN = 10_000
_COORD_CAP = 1e8


def coordinate_bound(height, width):
    """Largest accepted |coordinate| for polygons on an image of this size (scalar or array)."""
    return np.minimum(4.0 * np.maximum(height, width) + _COORD_MARGIN, _COORD_CAP)


# ------------------------------------------------------------------------- polygons
class Encoded(NamedTuple):
    """A batch of polygon annotations, validated and encoded in one pass."""

    counts: pa.Array  # string: the compressed counts per annotation, null where there is a problem
    areas: np.ndarray  # int64 foreground pixels per annotation (0 where there is a problem)
    problems: dict  # {annotation index: what is wrong with it}


def validate_polygons(coords, part_offsets, ann_offsets, heights, widths) -> list[str | None]:
    """Per annotation: what is wrong with it (a message), or None when it can be encoded."""
    arrays = _polygon_arrays(coords, part_offsets, ann_offsets, heights, widths)
    problems = _polygon_problems(*arrays)
    return [problems.get(i) for i in range(len(arrays[3]))]


def encode_polygons(coords, part_offsets, ann_offsets, heights, widths) -> list[str]:
    """Compressed counts per annotation, as annToRLE gives for ``segmentation=[part, ...]``.

    ``coords`` holds x0, y0, x1, y1, ... of every part of every annotation; part j is
    coords[part_offsets[j]:part_offsets[j + 1]]; annotation i owns parts
    ann_offsets[i]:ann_offsets[i + 1] and lies on an image of heights[i] x widths[i].
    Everything is validated first; the first bad annotation raises InvalidMask with its
    ``index`` (``encode_polygon_batch`` encodes the good ones and reports the bad ones,
    with the strings as one Arrow column).
    """
    return _encode_polygons(_polygon_arrays(coords, part_offsets, ann_offsets, heights, widths)).to_pylist()


def encode_polygon_batch(coords, part_offsets, ann_offsets, heights, widths) -> Encoded:
    """Validate and encode in one pass, with the area of each mask (pycocotools ``area``):
    bad annotations get a problem instead of a string, the others are encoded."""
    arrays = _polygon_arrays(coords, part_offsets, ann_offsets, heights, widths)
    problems = _polygon_problems(*arrays)
    n = len(arrays[3])
    skip = np.zeros(n, bool)
    skip[list(problems)] = True
    counts, areas = _polygons(arrays, skip)
    return Encoded(counts, areas, problems)


def _encode_polygons(arrays, batch: bool = True) -> pa.Array:
    problems = _polygon_problems(*arrays)
    if problems:
        i = min(problems)
        raise InvalidMask(problems[i], i if batch else None)
    return _polygons(arrays, None)[0]


def _polygons(arrays, skip) -> tuple[pa.Array, np.ndarray]:
    """(counts string, null where skipped; int64 area) per annotation of validated arrays.
    The kernel's strings stay in its one buffer: no Python object per annotation."""
    if rlekernel.AVAILABLE:
        enc = rlekernel.encode_polygons(*arrays, skip=skip)
        return enc.column(None if skip is None else ~skip), enc.areas
    counts, areas = (rle.py_polygons if rle.C is None else rle.c_polygons)(*arrays, skip=skip)
    return pa.array(counts, pa.string()), areas


def _polygon_arrays(coords, part_offsets, ann_offsets, heights, widths):
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    po, ao = np.asarray(part_offsets, np.int64), np.asarray(ann_offsets, np.int64)
    h, w = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    n = len(h)
    if coords.ndim != 1 or len(w) != n or len(ao) != n + 1:
        raise InvalidMask(f"got {n} heights, {len(w)} widths and {len(ao)} ann_offsets for "
                          f"coords of shape {coords.shape}; expected n, n, n + 1 and (k,)")
    if n and (ao[0] < 0 or ao[-1] >= len(po) or (np.diff(ao) < 0).any()):
        raise InvalidMask("ann_offsets must be non-decreasing indexes into part_offsets")
    used = po[ao[0]:ao[-1] + 1] if n else po[:0]
    if len(used) and (used[0] < 0 or used[-1] > len(coords) or (np.diff(used) < 0).any()):
        raise InvalidMask("part_offsets must be non-decreasing indexes into coords")
    return coords, po, ao, h, w


def _polygon_problems(coords, po, ao, heights, widths) -> dict[int, str]:
    n = len(heights)
    problems: dict[int, str] = {}
    if n == 0:
        return problems
    h, w = rle.check_sizes(np.stack([heights, widths], axis=1), n, problems, "image size")
    nparts = np.diff(ao)
    for i in np.flatnonzero(nparts == 0).tolist():
        problems.setdefault(
            i, "segmentation has no polygons; expected [[x0, y0, x1, y1, x2, y2, ...]]")
    parts = np.arange(ao[0], ao[-1])
    part_ann = np.repeat(np.arange(n), nparts)
    plen = po[parts + 1] - po[parts]
    badlen = (plen < 6) | (plen % 2 == 1)
    box = " (pycocotools would read 4 numbers as a box [x, y, width, height])"
    rle.first_problem(problems, part_ann, badlen, lambda j: (
        f"polygon has {plen[j]} coordinates; expected an even count >= 6"
        + (box if plen[j] == 4 else "")))
    sub = coords[po[ao[0]]:po[ao[-1]]]
    bound = coordinate_bound(h, w)
    # min and max are NaN when a coordinate is (and every comparison with NaN is False), so
    # one pass each clears a chunk of NaN, +-inf and coordinates beyond the smallest bound;
    # a chunk that fails looks for which
    lo, hi = (sub.min(), sub.max()) if len(sub) else (0.0, 0.0)
    in_bound = bool(-bound.min() <= lo and hi <= bound.min())
    coord_part = None
    if not in_bound:
        finite = np.isfinite(sub)
        coord_part = np.repeat(np.arange(len(parts)), plen)
        owner = part_ann[coord_part]
        rle.first_problem(problems, owner, ~finite, lambda j: f"coordinate {sub[j]} is not finite")
        sub = np.where(finite, sub, 0.0)
        outside = np.abs(sub) > bound[owner]
        rle.first_problem(problems, owner, outside, lambda j: (
            f"coordinate {sub[j]:g} is outside [-{bound[owner[j]]:g}, {bound[owner[j]]:g}] "
            f"(4 * max(height, width) + 10000 for an image of height {h[owner[j]]} and width {w[owner[j]]})"))
        sub = np.where(outside, 0.0, sub)
    if badlen.any():
        coord_part = np.repeat(np.arange(len(parts)), plen) if coord_part is None else coord_part
        sub, plen, part_ann = sub[~badlen[coord_part]], plen[~badlen], part_ann[~badlen]
    if not len(plen):
        return problems
    # an edge has at most 5 * (hi - lo) + 2 outline points (+1 for float rounding): when the
    # part with the most vertices cannot reach the limit that way, no part can
    if in_bound and int(plen.max() // 2) * (5.0 * (float(hi) - float(lo)) + 3.0) <= MAX_OUTLINE_POINTS:
        return problems
    # outline length as rleFrPoly counts it: vertices scaled by 5 and truncated to int,
    # max(|dx|, |dy|) + 1 points per edge, the last vertex joined to the first
    nv = plen // 2
    first = np.cumsum(nv) - nv
    last = first + nv - 1
    edge = None
    for axis in (0, 1):
        v = np.trunc(5.0 * sub[axis::2] + 0.5)
        d = np.empty_like(v)
        d[:-1] = v[1:] - v[:-1]
        d[last] = v[first] - v[last]
        edge = np.abs(d) if edge is None else np.maximum(edge, np.abs(d))
    outline = np.add.reduceat(edge + 1, first)
    rle.first_problem(problems, part_ann, outline > MAX_OUTLINE_POINTS, lambda j: (
        f"polygon outline is {outline[j] / 5:.0f} pixels long, more than "
        f"{MAX_OUTLINE_POINTS // 5}: pycocotools traces it at 5x resolution and allocates "
        "memory for every point"))
    return problems


# ------------------------------------------------------------------ single segmentations
def encode_segmentation(segmentation, height: int, width: int) -> str:
    """Compressed counts of one COCO ``segmentation`` on an image of height x width."""
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size, counts = segmentation["size"], segmentation["counts"]
        _rle_size(size)
        if list(size) != [height, width]:
            raise InvalidMask(f"RLE size {rle.show(size)} does not match the image size "
                              f"[{height}, {width}]")
        if isinstance(counts, (str, bytes)):
            return check_compressed(counts, size)
        return encode_uncompressed(counts, size)
    if not isinstance(segmentation, list):
        raise InvalidMask("segmentation is not a list of polygons or an RLE dict with counts and "
                          f"size: got {rle.describe(segmentation)}")
    if not all(isinstance(p, (list, tuple)) for p in segmentation):
        raise InvalidMask("segmentation is not a list of polygons [[x0, y0, ...], ...]: "
                          f"got {rle.describe(segmentation)}")
    try:
        coords = np.array([v for p in segmentation for v in p], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidMask("polygon coordinates are not all numbers") from None
    parts = np.concatenate(([0], np.cumsum([len(p) for p in segmentation]))).astype(np.int64)
    arrays = _polygon_arrays(coords, parts, [0, len(segmentation)], [height], [width])
    return _encode_polygons(arrays, batch=False)[0].as_py()


def _rle_size(size) -> tuple[int, int]:
    problems: dict[int, str] = {}
    h, w = rle.check_sizes([size], 1, problems)
    if problems:
        raise InvalidMask(problems[0])
    return int(h[0]), int(w[0])


def encode_uncompressed(counts, size) -> str:
    """Compressed string of an uncompressed RLE ``{"counts": [...], "size": [h, w]}``."""
    return encode_rle(counts, size)[0]


def check_compressed(counts, size) -> str:
    """The compressed string itself (bytes decoded), once checked to decode to h*w pixels."""
    if not isinstance(counts, (str, bytes)):
        raise InvalidMask(f"counts is not a string or list of ints: got {rle.describe(counts)}")
    return encode_rle(counts, size)[0]


def encode_rle(counts, size) -> tuple[str, int]:
    """(compressed string, area) of an RLE whose counts are a compressed string (checked to
    decode to h*w pixels) or a list of runs (uncompressed RLE)."""
    enc = encode_rle_batch([counts], [size])
    if enc.problems:
        raise InvalidMask(enc.problems[0])
    return enc.counts[0].as_py(), int(enc.areas[0])


def encode_rle_batch(counts_list, sizes) -> Encoded:
    """``encode_rle`` for a batch: compressed strings and areas, and a problem for each
    bad item instead of an exception."""
    n = len(counts_list)
    problems: dict[int, str] = {}
    h, w = rle.check_sizes(sizes, n, problems)
    out: list = [None] * n
    areas = np.zeros(n, np.int64)
    strings = [i for i in range(n) if isinstance(counts_list[i], (str, bytes))]
    if strings:
        rles, found = rle.parse_all([counts_list[i] for i in strings], np.stack([h[strings], w[strings]], axis=1))
        _, odd = rle.run_sums(rles.counts, rles.offsets)
        for k, i in enumerate(strings):
            if k in found:
                problems.setdefault(i, found[k])
            elif i not in problems:
                c = counts_list[i]
                out[i], areas[i] = (c if isinstance(c, str) else c.decode("ascii")), odd[k]
    good, runs = [], []
    for i in range(n):
        if out[i] is None and i not in problems:
            try:
                r = rle.int_counts(counts_list[i])
            except InvalidMask as err:
                problems[i] = str(err)
                continue
            good.append(i)
            runs.append(r)
    if good:
        offsets = np.zeros(len(good) + 1, np.int64)
        np.cumsum([len(r) for r in runs], out=offsets[1:])
        flat = np.concatenate(runs)
        total, odd = rle.run_sums(flat, offsets)
        if rlekernel.AVAILABLE:
            hg, wg = h[good], w[good]
            texts = rlekernel.encode_runs(flat, offsets, hg, wg, skip=total != hg * wg).strings()
        else:
            texts = rle.to_strings(flat, offsets)
        for k, i in enumerate(good):
            if total[k] != h[i] * w[i]:
                problems[i] = f"RLE counts sum to {total[k]}, expected h*w={h[i] * w[i]}"
            else:
                out[i], areas[i] = texts[k], odd[k]
    return Encoded(pa.array(out, pa.string()), areas, problems)


def counts_to_list(counts) -> list[int]:
    """Runs of a compressed string (str or bytes)."""
    strings, problems = rle.gather([counts])
    rle.check_bytes(strings, problems)
    runs, _ = rle.string_runs(strings, problems)
    if problems:
        raise InvalidMask(problems[0])
    return runs.tolist()


def list_to_counts(counts) -> str:
    """Compressed string of a list of runs (inverse of counts_to_list)."""
    runs = rle.int_counts(counts)
    return rle.to_string(runs)


def decode(counts, size) -> np.ndarray:
    """The (h, w) uint8 mask of a compressed string, as pycocotools ``mask.decode``."""
    r = rle.parse([counts], [size], None)
    h, w = int(r.heights[0]), int(r.widths[0])
    if rle.C is None:
        from pycocotools import mask as cmask

        return cmask.decode(r.dicts()[0])
    out, structs = np.empty(h * w, np.uint8), r.structs()
    rle.C.rleDecode(structs.ctypes.data, out.ctypes.data, 1)
    return out.reshape((h, w), order="F")


def encode_mask(mask: np.ndarray) -> str:
    """Compressed string of a 2-D binary mask (any nonzero value is foreground)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0 or mask.size > MAX_PIXELS:
        raise InvalidMask(f"mask has shape {mask.shape}; expected (height, width) with 1 to "
                          f"{MAX_PIXELS} pixels")
    m = np.asfortranarray(mask != 0).view(np.uint8)
    if rle.C is None:
        from pycocotools import mask as cmask

        return cmask.encode(m)["counts"].decode("ascii")
    r = rle.RLE()
    try:
        rle.C.rleEncode(ctypes.addressof(r), m.ctypes.data, m.shape[0], m.shape[1], 1)
        runs = np.frombuffer(ctypes.string_at(r.cnts, 4 * r.m), np.uint32)
    finally:
        rle.C.rleFree(ctypes.addressof(r))
    return rle.to_string(runs)


# ------------------------------------------------------------------- batch measurements
def area(counts_list, sizes) -> np.ndarray:
    """Foreground pixels per mask (int64), as pycocotools ``mask.area``."""
    r = rle.parse(counts_list, sizes)
    if rle.C is None:
        pos = np.arange(len(r.counts)) - np.repeat(r.offsets[:-1], np.diff(r.offsets))
        cs = np.concatenate(([0], np.cumsum(np.where(pos % 2 == 1, r.counts, 0))))
        return (cs[r.offsets[1:]] - cs[r.offsets[:-1]]).astype(np.int64)
    out, structs = np.zeros(len(r.heights), np.uint32), r.structs()
    rle.C.rleArea(structs.ctypes.data, len(r.heights), out.ctypes.data)
    return out.astype(np.int64)


def bbox(counts_list, sizes) -> np.ndarray:
    """[x, y, width, height] per mask, (n, 4) float64, as pycocotools ``mask.toBbox``."""
    r = rle.parse(counts_list, sizes)
    if rle.C is None:
        from pycocotools import mask as cmask

        return cmask.toBbox(r.dicts()).reshape(-1, 4) if len(r.heights) else np.zeros((0, 4))
    out, structs = np.zeros((len(r.heights), 4)), r.structs()
    rle.C.rleToBbox(structs.ctypes.data, out.ctypes.data, len(r.heights))
    return out


parse_batch = rle.parse  # the public name: query.functions and iou parse their batches with it

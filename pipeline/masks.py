"""Mask codec: COCO segmentations to compressed RLE counts, byte for byte as pycocotools.

Input: polygons (batches of flat coordinate buffers), uncompressed RLE (lists of run
lengths), compressed RLE strings and binary masks. Output: the compressed counts string
stored in ``rle_counts`` (an ASCII ``str``), and area, bbox, iou and pixels computed from
such strings. Guarantee: for valid input the string equals what pycocotools 2.0.x
``COCO.annToRLE(ann)['counts']`` gives for the same annotation and image size; invalid
input raises ``InvalidMask`` (what is wrong, and for batches which item) before any
pycocotools C code sees it.

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
``rleDecode``, ``rleEncode``, ``rleArea``, ``rleToBbox``, ``rleIou``), called through
ctypes on numpy buffers. Where the extension was not built (a source tree used without
installing), polygons go through pycocotools' ``rleFrPoly``, ``rleMerge`` and
``rleToString`` the same way: exact by construction, without pycocotools' per-object Python
work (its polygon path encodes every part to a string, parses it back, merges and encodes
again). Two C functions are fenced off: ``rleFrString`` reads past the end of a string cut
in the middle of a number, so strings are checked byte by byte first; ``rleToString``
reserves 6 bytes per run and writes one byte past them when every number needs 6
characters, so it is only used below 2**24 pixels (numbers then fit in 5) and vectorised
numpy builds the string otherwise, as it does for uncompressed RLE without the extension
(the tests hold both to pycocotools). If pycocotools' extension does not export the C
symbols, its slower Python API is used instead (same results).

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

from pipeline import rlekernel
from pipeline.errors import InvalidMask

log = logging.getLogger(__name__)

MAX_PIXELS = 2**29 - 1
MAX_OUTLINE_POINTS = 2**24
# Below this many pixels every number of a counts string fits in 5 characters, so the 6
# bytes per run that rleToString allocates always hold the string and its final NUL.
_C_STRING_PIXELS = 2**24
_COORD_MARGIN = 10_000
_COORD_CAP = 1e8


def coordinate_bound(height, width):
    """Largest accepted |coordinate| for polygons on an image of this size (scalar or array)."""
    return np.minimum(4.0 * np.maximum(height, width) + _COORD_MARGIN, _COORD_CAP)


# ---------------------------------------------------------------------------- C binding
class _RLE(ctypes.Structure):
    # maskApi.h: typedef unsigned long siz; typedef struct { siz h, w, m; uint *cnts; } RLE;
    _fields_ = [("h", ctypes.c_ulong), ("w", ctypes.c_ulong), ("m", ctypes.c_ulong),
                ("cnts", ctypes.c_void_p)]


_RLE_DTYPE = np.dtype({
    "names": ["h", "w", "m", "cnts"],
    "formats": [f"u{ctypes.sizeof(ctypes.c_ulong)}"] * 3 + [f"u{ctypes.sizeof(ctypes.c_void_p)}"],
    "offsets": [_RLE.h.offset, _RLE.w.offset, _RLE.m.offset, _RLE.cnts.offset],
    "itemsize": ctypes.sizeof(_RLE),
})


def _load_c():
    """pycocotools' maskApi functions, or None when its extension does not export them."""
    p, u = ctypes.c_void_p, ctypes.c_ulong
    signatures = {
        "rleFrPoly": (p, p, u, u, u), "rleMerge": (p, p, u, ctypes.c_int), "rleFree": (p,),
        "rleEncode": (p, p, u, u, u), "rleDecode": (p, p, u), "rleToBbox": (p, p, u),
        "rleIou": (p, p, u, u, p, p), "rleFrString": (p, p, u, u), "rleArea": (p, u, p),
    }
    try:
        from pycocotools import _mask

        lib = ctypes.CDLL(_mask.__file__)
        for name, args in signatures.items():
            fn = getattr(lib, name)
            # rleDecode returns a success byte in recent versions and nothing in older
            # ones; every input is checked to sum to h*w first, so it is not read.
            fn.argtypes, fn.restype = args, None
        lib.rleToString.argtypes, lib.rleToString.restype = (p,), p
    except (ImportError, OSError, AttributeError) as err:
        # Fallback, only for a pycocotools build that does not export these symbols: its
        # Python API (and _py_runs) give the same results, only slower.
        log.warning("pycocotools C functions unavailable (%s); using its Python API", err)
        return None
    return lib


_C = _load_c()


class _Rles(NamedTuple):
    """A batch of validated RLEs: runs of item i are counts[offsets[i]:offsets[i + 1]]."""

    counts: np.ndarray  # uint32
    offsets: np.ndarray  # int64, n + 1
    heights: np.ndarray  # int64
    widths: np.ndarray  # int64

    def structs(self) -> np.ndarray:
        """C ``RLE`` structs pointing into ``counts`` (which must outlive their use)."""
        s = np.zeros(len(self.heights), _RLE_DTYPE)
        s["h"], s["w"], s["m"] = self.heights, self.widths, np.diff(self.offsets)
        s["cnts"] = self.counts.ctypes.data + 4 * self.offsets[:-1].astype(np.uint64)
        return s

    def dicts(self) -> list[dict]:
        """pycocotools' RLE dicts, for the Python API fallback."""
        strings = _to_strings(self.counts, self.offsets)
        return [{"size": [h, w], "counts": s.encode()}
                for h, w, s in zip(self.heights.tolist(), self.widths.tolist(), strings)]


# ------------------------------------------------------------------- the string codec
def _to_strings(counts: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Compressed strings of runs counts[offsets[i]:offsets[i + 1]] (pycocotools' rleToString)."""
    x = counts.astype(np.int64)
    pos = np.arange(len(x)) - np.repeat(offsets[:-1], np.diff(offsets))
    later = np.flatnonzero(pos > 2)
    x[later] -= counts[later - 2]
    nchars = np.ones(len(x), np.int64)  # fewest 5-bit groups holding x as a signed number
    for k in range(1, 7):
        nchars += (x >= 1 << (5 * k - 1)) | (x < -(1 << (5 * k - 1)))
    first = np.cumsum(nchars) - nchars
    k = np.arange(int(nchars.sum())) - np.repeat(first, nchars)
    c = (np.repeat(x, nchars) >> (5 * k)) & 0x1F
    c |= (k < np.repeat(nchars - 1, nchars)) << 5
    text = (c + 48).astype(np.uint8).tobytes().decode("ascii")
    bounds = np.append(first, len(text))[offsets].tolist()
    return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _to_string(runs: np.ndarray) -> str:
    return _to_strings(runs, np.array([0, len(runs)]))[0]


class _Strings(NamedTuple):
    """Compressed strings in one buffer, each followed by a NUL as rleFrString wants."""

    buf: np.ndarray  # uint8
    starts: np.ndarray  # int64: string i is buf[starts[i]:starts[i] + lens[i]]
    lens: np.ndarray  # int64


def _gather(items) -> tuple[_Strings, dict[int, str]]:
    """Counts strings (a sequence of str/bytes or an Arrow string/binary array)."""
    if isinstance(items, (str, bytes)):
        raise InvalidMask("expected a sequence of counts strings, got a single string")
    if isinstance(items, pa.ChunkedArray):
        items = items.combine_chunks()
    if isinstance(items, pa.Array):
        if not any(f(items.type) for f in (pa.types.is_string, pa.types.is_large_string,
                                           pa.types.is_binary, pa.types.is_large_binary)):
            raise InvalidMask(f"counts column has type {items.type}; expected string or binary")
        arr = items.cast(pa.large_binary())
        _, offs, data = arr.buffers()
        offsets = np.frombuffer(offs, np.int64)[arr.offset:arr.offset + len(arr) + 1]
        data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        lens = np.diff(offsets)
        buf = np.insert(data[offsets[0]:offsets[-1]], offsets[1:] - offsets[0], 0)
        nulls = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
        problems = {i: "counts is null" for i in nulls.tolist()}
    else:
        items = list(items)
        problems = {}
        lens = np.array([len(s) if type(s) is str else -1 for s in items], np.int64)
        plain = bool((lens >= 0).all())
        data = ("\0".join(items) + "\0").encode() if plain and items else b""
        if not plain or len(data) != lens.sum() + len(items):  # not all ASCII str
            chunks = []
            for i, s in enumerate(items):
                if isinstance(s, str):
                    s = s.encode()
                elif not isinstance(s, (bytes, bytearray, memoryview)):
                    problems[i] = f"counts is not a string: got {type(s).__name__}"
                    s = b""
                chunks.append(bytes(s))
            lens = np.array([len(s) for s in chunks], np.int64)
            data = b"\0".join(chunks) + b"\0" if chunks else b""
        buf = np.frombuffer(data, np.uint8)
    return _Strings(buf, np.cumsum(lens + 1) - lens - 1, lens), problems


def _first(problems: dict, owner: np.ndarray, bad: np.ndarray, message) -> None:
    """Record message(position) for the first bad position of each owner without a problem."""
    where = np.flatnonzero(bad)
    if where.size:
        owners, first = np.unique(owner[where], return_index=True)
        for i, j in zip(owners.tolist(), where[first].tolist()):
            if i not in problems:
                problems[i] = message(j)


def _check_bytes(s: _Strings, problems: dict) -> None:
    """Reject what rleFrString cannot read: characters outside '0'..'o', a string cut in
    the middle of a number (C would read on past its end) and numbers of more than 6
    characters (their bit shifts overflow a C int). Never passes bad strings to C."""
    ends = s.starts + s.lens
    c = s.buf - np.uint8(48)  # the NUL after each string becomes 208
    if np.count_nonzero(c > 63) > len(ends):
        bad = c > 63
        bad[ends] = False
        where = np.flatnonzero(bad)
        owner = np.searchsorted(s.starts, where, "right") - 1
        _first(problems, owner, np.ones(len(where), bool), lambda j: (
            f"compressed counts has {_byte(s.buf[where[j]])} at position "
            f"{where[j] - s.starts[owner[j]]}; expected characters '0' to 'o'"))
    last = np.flatnonzero(s.lens > 0)
    cut = (c[ends[last] - 1] & 0x20) != 0
    _first(problems, last, cut, lambda j: (
        "compressed counts ends in the middle of a number (its last character has bit 0x20 set)"))
    cont = np.flatnonzero((s.buf - np.uint8(80)) < 32)  # characters 'P'..'o': more follows
    long = np.flatnonzero(cont[5:] - cont[:-5] == 5)  # 6 in a row: a number of 7 or more
    if long.size:
        where = cont[long]
        owner = np.searchsorted(s.starts, where, "right") - 1
        _first(problems, owner, np.ones(len(where), bool), lambda j: (
            f"compressed counts has a number longer than 6 characters at position "
            f"{where[j] - s.starts[owner[j]]}; pycocotools decodes at most 6 exactly"))


def _byte(b) -> str:
    return f"character {chr(b)!r}" if b < 128 else f"byte 0x{int(b):02x}"


def _runs(s: _Strings, problems: dict) -> tuple[np.ndarray, np.ndarray]:
    """Runs (uint32, as rleFrString gives them) and n + 1 offsets; strings with a
    problem get none."""
    n = len(s.lens)
    todo = [i for i in range(n) if i not in problems]
    lengths = [0] * n
    if not todo:
        runs = np.zeros(0, np.uint32)
    elif _C is None:
        parsed = [_py_runs(s.buf[s.starts[i]:s.starts[i] + s.lens[i]].tobytes()) for i in todo]
        for i, p in zip(todo, parsed):
            lengths[i] = len(p)
        runs = np.array([v for p in parsed for v in p], np.uint32)
    else:
        runs = _c_runs(s, todo, lengths)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if runs.size and runs.max() >= 2**31:  # a negative number, wrapped around by C
        owner = np.repeat(np.arange(n), lengths)
        pos = np.arange(len(runs)) - offsets[owner]
        _first(problems, owner, runs >= 2**31, lambda j: (
            f"RLE counts has a negative run {runs[j].astype(np.int32)} at position {pos[j]}"))
    return runs, offsets


def _c_runs(s: _Strings, todo: list[int], lengths: list[int]) -> np.ndarray:
    runs = np.empty(int(s.lens.sum()), np.uint32)  # every run takes at least one character
    r, base, dest, starts = _RLE(), s.buf.ctypes.data, runs.ctypes.data, s.starts.tolist()
    address, end = ctypes.addressof(r), 0
    frstring, free, memmove = _C.rleFrString, _C.rleFree, ctypes.memmove
    try:
        for i in todo:
            frstring(address, base + starts[i], 0, 0)
            lengths[i] = m = r.m
            memmove(dest + 4 * end, r.cnts, 4 * m)
            end += m
            free(address)
    finally:
        free(address)
    return runs[:end]


def _py_runs(data: bytes) -> list[int]:
    """rleFrString in Python, for when the C function is unavailable."""
    runs: list[int] = []
    p = 0
    while p < len(data):
        x = k = 0
        more = True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more, p, k = c & 0x20, p + 1, k + 1
        if c & 0x10:
            x -= 1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x & 0xFFFFFFFF)
    return runs


def _sizes(sizes, n: int, problems: dict, label: str = "RLE size"):
    """heights, widths (int64) of n sizes; bad ones recorded in problems (and set to 1)."""
    if isinstance(sizes, (pa.Array, pa.ChunkedArray)):
        sizes = sizes.to_pylist()
    try:
        arr = np.asarray(sizes)
    except ValueError:  # ragged
        arr = np.zeros(0, object)
    if arr.dtype.kind in "iu" and arr.shape == (n, 2):
        h, w = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
        ok = (arr > 0).all(axis=1) & (arr <= MAX_PIXELS).all(axis=1)
        rows = arr
    else:
        rows = list(sizes)
        if len(rows) != n:
            raise InvalidMask(f"got {len(rows)} sizes for {n} masks")
        h, w, ok = np.ones(n, np.int64), np.ones(n, np.int64), np.zeros(n, bool)
        for i, r in enumerate(rows):
            if (isinstance(r, (list, tuple, np.ndarray)) and len(r) == 2
                    and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                            and 0 < v <= MAX_PIXELS for v in r)):
                h[i], w[i], ok[i] = int(r[0]), int(r[1]), True
    for i in np.flatnonzero(~ok).tolist():
        problems.setdefault(i, f"{label} {_show(rows[i])} is not 2 positive ints")
    h[~ok], w[~ok] = 1, 1
    for i in np.flatnonzero(h * w > MAX_PIXELS).tolist():
        problems.setdefault(i, (
            f"{label} [{h[i]}, {w[i]}] has {h[i] * w[i]} pixels, more than {MAX_PIXELS} "
            "(2**29 - 1), beyond which pycocotools' counts strings overflow"))
    return h, w


def _show(value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        items = (v.item() if isinstance(v, np.generic) else v for v in value)
        return "[" + ", ".join(str(v) for v in items) + "]"
    return repr(value)


def _rles(counts_list, sizes, what: str | None = "mask") -> _Rles:
    """Parse and check a batch of compressed strings; raise for the first bad one (naming
    it as ``what #i``, or not at all when ``what`` is None: a single string)."""
    rles, problems = _parse_rles(counts_list, sizes)
    if problems:
        i = min(problems)
        raise InvalidMask(problems[i], None if what is None else i, what or "")
    return rles


parse_batch = _rles  # the public name: query.functions parses its SQL vectors with it


def _parse_rles(counts_list, sizes) -> tuple[_Rles, dict[int, str]]:
    """Parse and check a batch of compressed strings; bad ones are listed, not raised."""
    strings, problems = _gather(counts_list)
    h, w = _sizes(sizes, len(strings.lens), problems)
    _check_bytes(strings, problems)
    runs, offsets = _runs(strings, problems)
    total, _ = _run_sums(runs, offsets)
    for i in np.flatnonzero(total != h * w).tolist():
        problems.setdefault(i, f"RLE counts sum to {total[i]}, expected h*w={h[i] * w[i]}")
    return _Rles(runs, offsets, h, w), problems


def _run_sums(runs: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the sum of its runs (pixels) and of its odd runs (foreground pixels)."""
    m = np.diff(offsets)
    pos = np.arange(len(runs)) - np.repeat(offsets[:-1], m)
    cs = np.concatenate(([0], np.cumsum(runs, dtype=np.int64)))
    odd = np.concatenate(([0], np.cumsum(np.where(pos % 2 == 1, runs, 0), dtype=np.int64)))
    return cs[offsets[1:]] - cs[offsets[:-1]], odd[offsets[1:]] - odd[offsets[:-1]]


def _int_counts(counts) -> np.ndarray:
    """Uncompressed runs as int64, each in [0, MAX_PIXELS]."""
    if isinstance(counts, np.ndarray):
        ok = counts.ndim == 1 and counts.dtype.kind in "iu"
    else:
        ok = isinstance(counts, (list, tuple)) and (set(map(type, counts)) <= {int} or all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts))
    if not ok:
        raise InvalidMask(f"counts is not a string or list of ints: got {_describe(counts)}")
    values = np.asarray(counts) if len(counts) else np.zeros(0, np.int64)
    if values.dtype.kind == "O":  # ints beyond 64 bits
        values = np.array([min(max(int(v), -1), MAX_PIXELS + 1) for v in counts], np.int64)
    bad = np.flatnonzero((values < 0) | (values > MAX_PIXELS))
    if bad.size:
        i = int(bad[0])
        v = counts[i]
        if v < 0:
            raise InvalidMask(f"RLE counts has a negative run {v} at position {i}")
        raise InvalidMask(f"RLE counts has a run of {v} at position {i}, more than the "
                          f"{MAX_PIXELS} pixels an image may have")
    return values.astype(np.int64)


def _describe(value) -> str:
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"{type(value).__name__} of {', '.join(kinds)}"
    return type(value).__name__


# ------------------------------------------------------------------------- polygons
class Encoded(NamedTuple):
    """A batch of polygon annotations, validated and encoded in one pass."""

    counts: list  # compressed string per annotation; None where there is a problem
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
    ``index`` (``encode_polygon_batch`` encodes the good ones and reports the bad ones).
    """
    return _encode_polygons(_polygon_arrays(coords, part_offsets, ann_offsets, heights, widths))


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


def _encode_polygons(arrays, batch: bool = True) -> list[str]:
    problems = _polygon_problems(*arrays)
    if problems:
        i = min(problems)
        raise InvalidMask(problems[i], i if batch else None)
    return _polygons(arrays, None)[0]


def _polygons(arrays, skip) -> tuple[list, np.ndarray]:
    """(counts string or None where skipped, int64 area) per annotation of validated arrays."""
    if rlekernel.AVAILABLE:
        enc = rlekernel.encode_polygons(*arrays, skip=skip)
        counts = enc.strings()
        if skip is not None:
            for i in np.flatnonzero(skip).tolist():
                counts[i] = None
        return counts, enc.areas
    if _C is None:
        return _py_polygons(*arrays, skip=skip)
    return _c_polygons(*arrays, skip=skip)


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
    h, w = _sizes(np.stack([heights, widths], axis=1), n, problems, "image size")
    nparts = np.diff(ao)
    for i in np.flatnonzero(nparts == 0).tolist():
        problems.setdefault(
            i, "segmentation has no polygons; expected [[x0, y0, x1, y1, x2, y2, ...]]")
    parts = np.arange(ao[0], ao[-1])
    part_ann = np.repeat(np.arange(n), nparts)
    plen = po[parts + 1] - po[parts]
    badlen = (plen < 6) | (plen % 2 == 1)
    box = " (pycocotools would read 4 numbers as a box [x, y, width, height])"
    _first(problems, part_ann, badlen, lambda j: (
        f"polygon has {plen[j]} coordinates; expected an even count >= 6"
        + (box if plen[j] == 4 else "")))
    sub = coords[po[ao[0]]:po[ao[-1]]]
    bound = coordinate_bound(h, w)
    finite = np.isfinite(sub)
    coord_part = None
    if not finite.all() or (len(sub) and np.abs(sub).max() > bound.min()):  # find which
        coord_part = np.repeat(np.arange(len(parts)), plen)
        owner = part_ann[coord_part]
        _first(problems, owner, ~finite, lambda j: f"coordinate {sub[j]} is not finite")
        sub = np.where(finite, sub, 0.0)
        outside = np.abs(sub) > bound[owner]
        _first(problems, owner, outside, lambda j: (
            f"coordinate {sub[j]:g} is outside [-{bound[owner[j]]:g}, {bound[owner[j]]:g}] "
            f"(4 * max(height, width) + 10000 for an image of height {h[owner[j]]} and width {w[owner[j]]})"))
        sub = np.where(outside, 0.0, sub)
    if badlen.any():
        coord_part = np.repeat(np.arange(len(parts)), plen) if coord_part is None else coord_part
        sub, plen, part_ann = sub[~badlen[coord_part]], plen[~badlen], part_ann[~badlen]
    if not len(plen):
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
    _first(problems, part_ann, outline > MAX_OUTLINE_POINTS, lambda j: (
        f"polygon outline is {outline[j] / 5:.0f} pixels long, more than "
        f"{MAX_OUTLINE_POINTS // 5}: pycocotools traces it at 5x resolution and allocates "
        "memory for every point"))
    return problems


def _c_polygons(coords, po, ao, heights, widths, skip=None) -> tuple[list, np.ndarray]:
    """rleFrPoly per part, rleMerge when there are several, rleToString when it is safe,
    rleArea; annotations marked in ``skip`` are left as None."""
    n = len(heights)
    most = int(np.diff(ao).max()) if n else 0
    rles = (_RLE * (most + 2))()  # the parts of one annotation, their union, a string holder
    size, first = ctypes.sizeof(_RLE), ctypes.addressof(rles)
    merged, holder = first + most * size, rles[most + 1]
    areas = np.zeros(n, np.uint32)
    base, area_at = coords.ctypes.data, areas.ctypes.data
    po, ao, hs, ws = po.tolist(), ao.tolist(), heights.tolist(), widths.tolist()
    todo = range(n) if skip is None else np.flatnonzero(~skip).tolist()
    frpoly, merge, free, rle_area = _C.rleFrPoly, _C.rleMerge, _C.rleFree, _C.rleArea
    to_string, string_at = _C.rleToString, ctypes.string_at
    out: list = [None] * n
    large = []  # (index, runs as bytes) of images too large for rleToString
    try:
        for i in todo:
            a, k, h, w = ao[i], ao[i + 1] - ao[i], hs[i], ws[i]
            for j in range(k):
                s = po[a + j]
                frpoly(first + j * size, base + 8 * s, (po[a + j + 1] - s) >> 1, h, w)
            if k > 1:
                merge(first, merged, k, 0)
            one = merged if k > 1 else first
            rle_area(one, 1, area_at + 4 * i)
            if h * w < _C_STRING_PIXELS:
                text = to_string(one)
                out[i] = string_at(text).decode("ascii")
                holder.cnts = text  # rleFree(holder) frees it with the library's own free()
                free(first + (most + 1) * size)
            else:
                r = rles[most if k > 1 else 0]
                large.append((i, string_at(r.cnts, 4 * r.m)))
            for j in range(k):
                free(first + j * size)
            if k > 1:
                free(merged)
    finally:  # rleFree sets cnts to NULL, so freeing twice is harmless
        for j in range(most + 2):
            free(first + j * size)
    if large:
        runs = [np.frombuffer(b, np.uint32) for _, b in large]
        offsets = np.concatenate(([0], np.cumsum([len(r) for r in runs]))).astype(np.int64)
        for (i, _), text in zip(large, _to_strings(np.concatenate(runs), offsets)):
            out[i] = text
    return out, areas.astype(np.int64)


def _py_polygons(coords, po, ao, heights, widths, skip=None) -> tuple[list, np.ndarray]:
    from pycocotools import mask as cmask

    out: list = [None] * len(heights)
    areas = np.zeros(len(heights), np.int64)
    for i in range(len(heights)):
        if skip is not None and skip[i]:
            continue
        parts = [coords[po[j]:po[j + 1]].tolist() for j in range(ao[i], ao[i + 1])]
        rle = cmask.merge(cmask.frPyObjects(parts, int(heights[i]), int(widths[i])))
        out[i], areas[i] = rle["counts"].decode("ascii"), int(cmask.area(rle))
    return out, areas


# ------------------------------------------------------------------ single segmentations
def encode_segmentation(segmentation, height: int, width: int) -> str:
    """Compressed counts of one COCO ``segmentation`` on an image of height x width."""
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size, counts = segmentation["size"], segmentation["counts"]
        _rle_size(size)
        if list(size) != [height, width]:
            raise InvalidMask(f"RLE size {_show(size)} does not match the image size "
                              f"[{height}, {width}]")
        if isinstance(counts, (str, bytes)):
            return check_compressed(counts, size)
        return encode_uncompressed(counts, size)
    if not isinstance(segmentation, list):
        raise InvalidMask("segmentation is not a list of polygons or an RLE dict with counts and "
                          f"size: got {_describe(segmentation)}")
    if not all(isinstance(p, (list, tuple)) for p in segmentation):
        raise InvalidMask("segmentation is not a list of polygons [[x0, y0, ...], ...]: "
                          f"got {_describe(segmentation)}")
    try:
        coords = np.array([v for p in segmentation for v in p], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidMask("polygon coordinates are not all numbers") from None
    parts = np.concatenate(([0], np.cumsum([len(p) for p in segmentation]))).astype(np.int64)
    arrays = _polygon_arrays(coords, parts, [0, len(segmentation)], [height], [width])
    return _encode_polygons(arrays, batch=False)[0]


def _rle_size(size) -> tuple[int, int]:
    problems: dict[int, str] = {}
    h, w = _sizes([size], 1, problems)
    if problems:
        raise InvalidMask(problems[0])
    return int(h[0]), int(w[0])


def encode_uncompressed(counts, size) -> str:
    """Compressed string of an uncompressed RLE ``{"counts": [...], "size": [h, w]}``."""
    return encode_rle(counts, size)[0]


def check_compressed(counts, size) -> str:
    """The compressed string itself (bytes decoded), once checked to decode to h*w pixels."""
    if not isinstance(counts, (str, bytes)):
        raise InvalidMask(f"counts is not a string or list of ints: got {_describe(counts)}")
    return encode_rle(counts, size)[0]


def encode_rle(counts, size) -> tuple[str, int]:
    """(compressed string, area) of an RLE whose counts are a compressed string (checked to
    decode to h*w pixels) or a list of runs (uncompressed RLE)."""
    enc = encode_rle_batch([counts], [size])
    if enc.problems:
        raise InvalidMask(enc.problems[0])
    return enc.counts[0], int(enc.areas[0])


def encode_rle_batch(counts_list, sizes) -> Encoded:
    """``encode_rle`` for a batch: compressed strings and areas, and a problem for each
    bad item instead of an exception."""
    n = len(counts_list)
    problems: dict[int, str] = {}
    h, w = _sizes(sizes, n, problems)
    out: list = [None] * n
    areas = np.zeros(n, np.int64)
    strings = [i for i in range(n) if isinstance(counts_list[i], (str, bytes))]
    if strings:
        rles, found = _parse_rles([counts_list[i] for i in strings], np.stack([h[strings], w[strings]], axis=1))
        _, odd = _run_sums(rles.counts, rles.offsets)
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
                r = _int_counts(counts_list[i])
            except InvalidMask as err:
                problems[i] = str(err)
                continue
            good.append(i)
            runs.append(r)
    if good:
        offsets = np.zeros(len(good) + 1, np.int64)
        np.cumsum([len(r) for r in runs], out=offsets[1:])
        flat = np.concatenate(runs)
        total, odd = _run_sums(flat, offsets)
        if rlekernel.AVAILABLE:
            hg, wg = h[good], w[good]
            texts = rlekernel.encode_runs(flat, offsets, hg, wg, skip=total != hg * wg).strings()
        else:
            texts = _to_strings(flat, offsets)
        for k, i in enumerate(good):
            if total[k] != h[i] * w[i]:
                problems[i] = f"RLE counts sum to {total[k]}, expected h*w={h[i] * w[i]}"
            else:
                out[i], areas[i] = texts[k], odd[k]
    return Encoded(out, areas, problems)


def counts_to_list(counts) -> list[int]:
    """Runs of a compressed string (str or bytes)."""
    strings, problems = _gather([counts])
    _check_bytes(strings, problems)
    runs, _ = _runs(strings, problems)
    if problems:
        raise InvalidMask(problems[0])
    return runs.tolist()


def list_to_counts(counts) -> str:
    """Compressed string of a list of runs (inverse of counts_to_list)."""
    runs = _int_counts(counts)
    return _to_string(runs)


def decode(counts, size) -> np.ndarray:
    """The (h, w) uint8 mask of a compressed string, as pycocotools ``mask.decode``."""
    r = _rles([counts], [size], None)
    h, w = int(r.heights[0]), int(r.widths[0])
    if _C is None:
        from pycocotools import mask as cmask

        return cmask.decode(r.dicts()[0])
    out, structs = np.empty(h * w, np.uint8), r.structs()
    _C.rleDecode(structs.ctypes.data, out.ctypes.data, 1)
    return out.reshape((h, w), order="F")


def encode_mask(mask: np.ndarray) -> str:
    """Compressed string of a 2-D binary mask (any nonzero value is foreground)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0 or mask.size > MAX_PIXELS:
        raise InvalidMask(f"mask has shape {mask.shape}; expected (height, width) with 1 to "
                          f"{MAX_PIXELS} pixels")
    m = np.asfortranarray(mask != 0).view(np.uint8)
    if _C is None:
        from pycocotools import mask as cmask

        return cmask.encode(m)["counts"].decode("ascii")
    r = _RLE()
    try:
        _C.rleEncode(ctypes.addressof(r), m.ctypes.data, m.shape[0], m.shape[1], 1)
        runs = np.frombuffer(ctypes.string_at(r.cnts, 4 * r.m), np.uint32)
    finally:
        _C.rleFree(ctypes.addressof(r))
    return _to_string(runs)


# ------------------------------------------------------------------- batch measurements
def area(counts_list, sizes) -> np.ndarray:
    """Foreground pixels per mask (int64), as pycocotools ``mask.area``."""
    r = _rles(counts_list, sizes)
    if _C is None:
        pos = np.arange(len(r.counts)) - np.repeat(r.offsets[:-1], np.diff(r.offsets))
        cs = np.concatenate(([0], np.cumsum(np.where(pos % 2 == 1, r.counts, 0))))
        return (cs[r.offsets[1:]] - cs[r.offsets[:-1]]).astype(np.int64)
    out, structs = np.zeros(len(r.heights), np.uint32), r.structs()
    _C.rleArea(structs.ctypes.data, len(r.heights), out.ctypes.data)
    return out.astype(np.int64)


def bbox(counts_list, sizes) -> np.ndarray:
    """[x, y, width, height] per mask, (n, 4) float64, as pycocotools ``mask.toBbox``."""
    r = _rles(counts_list, sizes)
    if _C is None:
        from pycocotools import mask as cmask

        return cmask.toBbox(r.dicts()).reshape(-1, 4) if len(r.heights) else np.zeros((0, 4))
    out, structs = np.zeros((len(r.heights), 4)), r.structs()
    _C.rleToBbox(structs.ctypes.data, out.ctypes.data, len(r.heights))
    return out


def iou(dt_counts, dt_sizes, gt_counts, gt_sizes, iscrowd) -> np.ndarray:
    """(n_dt, n_gt) intersection over union, as pycocotools ``mask.iou``.

    For a crowd gt the denominator is the dt area; masks of different sizes give -1.
    Unlike pycocotools, an empty side gives an empty (n_dt, n_gt) array, not [].
    """
    dt, gt = _rles(dt_counts, dt_sizes, "dt mask"), _rles(gt_counts, gt_sizes, "gt mask")
    crowd = np.ascontiguousarray(iscrowd, dtype=np.uint8).reshape(-1)
    m, n = len(dt.heights), len(gt.heights)
    if len(crowd) != n:
        raise InvalidMask(f"iscrowd has {len(crowd)} flags for {n} gt masks")
    if m == 0 or n == 0:
        return np.zeros((m, n))
    if _C is None:
        from pycocotools import mask as cmask

        return np.asarray(cmask.iou(dt.dicts(), gt.dicts(), crowd.tolist()))
    out = np.zeros(m * n)
    dts, gts = dt.structs(), gt.structs()
    _C.rleIou(dts.ctypes.data, gts.ctypes.data, m, n, crowd.ctypes.data, out.ctypes.data)
    return out.reshape((m, n), order="F")

"""Compressed RLE strings: pycocotools' C functions through ctypes, and the counts strings.

Parses batches of compressed counts strings into run arrays (checked byte by byte before
any C code reads them), writes run arrays back as strings, and checks sizes. ``masks``
builds the codec on top of it; the RLE format is explained there. Imports only errors.
"""

from __future__ import annotations

import ctypes
import logging
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from pipeline.errors import InvalidMask

log = logging.getLogger(__name__)

# pixels per image: every run and every delta then fits in the 6 characters per number
# that pycocotools decodes exactly (see masks)
MAX_PIXELS = 2**29 - 1
# below this many pixels rleToString's 6 bytes per run hold every number (see masks)
C_STRING_PIXELS = 2**24

# ---------------------------------------------------------------------------- C binding
class RLE(ctypes.Structure):
    # maskApi.h: typedef unsigned long siz; typedef struct { siz h, w, m; uint *cnts; } RLE;
    _fields_ = [("h", ctypes.c_ulong), ("w", ctypes.c_ulong), ("m", ctypes.c_ulong),
                ("cnts", ctypes.c_void_p)]


RLE_DTYPE = np.dtype({
    "names": ["h", "w", "m", "cnts"],
    "formats": [f"u{ctypes.sizeof(ctypes.c_ulong)}"] * 3 + [f"u{ctypes.sizeof(ctypes.c_void_p)}"],
    "offsets": [RLE.h.offset, RLE.w.offset, RLE.m.offset, RLE.cnts.offset],
    "itemsize": ctypes.sizeof(RLE),
})


def load_c():
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
        # Python API (and py_runs) give the same results, only slower.
        log.warning("pycocotools C functions unavailable (%s); using its Python API", err)
        return None
    return lib


C = load_c()


class Rles(NamedTuple):
    """A batch of validated RLEs: runs of item i are counts[offsets[i]:offsets[i + 1]]."""

    counts: np.ndarray  # uint32
    offsets: np.ndarray  # int64, n + 1
    heights: np.ndarray  # int64
    widths: np.ndarray  # int64

    def structs(self) -> np.ndarray:
        """C ``RLE`` structs pointing into ``counts`` (which must outlive their use)."""
        s = np.zeros(len(self.heights), RLE_DTYPE)
        s["h"], s["w"], s["m"] = self.heights, self.widths, np.diff(self.offsets)
        s["cnts"] = self.counts.ctypes.data + 4 * self.offsets[:-1].astype(np.uint64)
        return s

    def dicts(self) -> list[dict]:
        """pycocotools' RLE dicts, for the Python API fallback."""
        strings = to_strings(self.counts, self.offsets)
        return [{"size": [h, w], "counts": s.encode()}
                for h, w, s in zip(self.heights.tolist(), self.widths.tolist(), strings)]


# ------------------------------------------------------------------- the string codec
def to_strings(counts: np.ndarray, offsets: np.ndarray) -> list[str]:
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


def to_string(runs: np.ndarray) -> str:
    return to_strings(runs, np.array([0, len(runs)]))[0]


class Strings(NamedTuple):
    """Compressed strings in one buffer, each followed by a NUL as rleFrString wants."""

    buf: np.ndarray  # uint8
    starts: np.ndarray  # int64: string i is buf[starts[i]:starts[i] + lens[i]]
    lens: np.ndarray  # int64


def gather(items) -> tuple[Strings, dict[int, str]]:
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
    return Strings(buf, np.cumsum(lens + 1) - lens - 1, lens), problems


def first_problem(problems: dict, owner: np.ndarray, bad: np.ndarray, message) -> None:
    """Record message(position) for the first bad position of each owner without a problem."""
    where = np.flatnonzero(bad)
    if where.size:
        owners, first = np.unique(owner[where], return_index=True)
        for i, j in zip(owners.tolist(), where[first].tolist()):
            if i not in problems:
                problems[i] = message(j)


def check_bytes(s: Strings, problems: dict) -> None:
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
        first_problem(problems, owner, np.ones(len(where), bool), lambda j: (
            f"compressed counts has {byte(s.buf[where[j]])} at position "
            f"{where[j] - s.starts[owner[j]]}; expected characters '0' to 'o'"))
    last = np.flatnonzero(s.lens > 0)
    cut = (c[ends[last] - 1] & 0x20) != 0
    first_problem(problems, last, cut, lambda j: (
        "compressed counts ends in the middle of a number (its last character has bit 0x20 set)"))
    cont = np.flatnonzero((s.buf - np.uint8(80)) < 32)  # characters 'P'..'o': more follows
    long = np.flatnonzero(cont[5:] - cont[:-5] == 5)  # 6 in a row: a number of 7 or more
    if long.size:
        where = cont[long]
        owner = np.searchsorted(s.starts, where, "right") - 1
        first_problem(problems, owner, np.ones(len(where), bool), lambda j: (
            f"compressed counts has a number longer than 6 characters at position "
            f"{where[j] - s.starts[owner[j]]}; pycocotools decodes at most 6 exactly"))


def byte(b) -> str:
    return f"character {chr(b)!r}" if b < 128 else f"byte 0x{int(b):02x}"


def string_runs(s: Strings, problems: dict) -> tuple[np.ndarray, np.ndarray]:
    """Runs (uint32, as rleFrString gives them) and n + 1 offsets; strings with a
    problem get none."""
    n = len(s.lens)
    todo = [i for i in range(n) if i not in problems]
    lengths = [0] * n
    if not todo:
        runs = np.zeros(0, np.uint32)
    elif C is None:
        parsed = [py_runs(s.buf[s.starts[i]:s.starts[i] + s.lens[i]].tobytes()) for i in todo]
        for i, p in zip(todo, parsed):
            lengths[i] = len(p)
        runs = np.array([v for p in parsed for v in p], np.uint32)
    else:
        runs = c_runs(s, todo, lengths)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if runs.size and runs.max() >= 2**31:  # a negative number, wrapped around by C
        owner = np.repeat(np.arange(n), lengths)
        pos = np.arange(len(runs)) - offsets[owner]
        first_problem(problems, owner, runs >= 2**31, lambda j: (
            f"RLE counts has a negative run {runs[j].astype(np.int32)} at position {pos[j]}"))
    return runs, offsets


def c_runs(s: Strings, todo: list[int], lengths: list[int]) -> np.ndarray:
    runs = np.empty(int(s.lens.sum()), np.uint32)  # every run takes at least one character
    r, base, dest, starts = RLE(), s.buf.ctypes.data, runs.ctypes.data, s.starts.tolist()
    address, end = ctypes.addressof(r), 0
    frstring, free, memmove = C.rleFrString, C.rleFree, ctypes.memmove
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


def py_runs(data: bytes) -> list[int]:
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


def check_sizes(sizes, n: int, problems: dict, label: str = "RLE size"):
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
        problems.setdefault(i, f"{label} {show(rows[i])} is not 2 positive ints")
    h[~ok], w[~ok] = 1, 1
    for i in np.flatnonzero(h * w > MAX_PIXELS).tolist():
        problems.setdefault(i, (
            f"{label} [{h[i]}, {w[i]}] has {h[i] * w[i]} pixels, more than {MAX_PIXELS} "
            "(2**29 - 1), beyond which pycocotools' counts strings overflow"))
    return h, w


def show(value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        items = (v.item() if isinstance(v, np.generic) else v for v in value)
        return "[" + ", ".join(str(v) for v in items) + "]"
    return repr(value)


def parse(counts_list, sizes, what: str | None = "mask") -> Rles:
    """Parse and check a batch of compressed strings; raise for the first bad one (naming
    it as ``what #i``, or not at all when ``what`` is None: a single string)."""
    rles, problems = parse_all(counts_list, sizes)
    if problems:
        i = min(problems)
        raise InvalidMask(problems[i], None if what is None else i, what or "")
    return rles


def parse_all(counts_list, sizes) -> tuple[Rles, dict[int, str]]:
    """Parse and check a batch of compressed strings; bad ones are listed, not raised."""
    strings, problems = gather(counts_list)
    h, w = check_sizes(sizes, len(strings.lens), problems)
    check_bytes(strings, problems)
    runs, offsets = string_runs(strings, problems)
    total, _ = run_sums(runs, offsets)
    for i in np.flatnonzero(total != h * w).tolist():
        problems.setdefault(i, f"RLE counts sum to {total[i]}, expected h*w={h[i] * w[i]}")
    return Rles(runs, offsets, h, w), problems


def run_sums(runs: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the sum of its runs (pixels) and of its odd runs (foreground pixels)."""
    m = np.diff(offsets)
    pos = np.arange(len(runs)) - np.repeat(offsets[:-1], m)
    cs = np.concatenate(([0], np.cumsum(runs, dtype=np.int64)))
    odd = np.concatenate(([0], np.cumsum(np.where(pos % 2 == 1, runs, 0), dtype=np.int64)))
    return cs[offsets[1:]] - cs[offsets[:-1]], odd[offsets[1:]] - odd[offsets[:-1]]


def int_counts(counts) -> np.ndarray:
    """Uncompressed runs as int64, each in [0, MAX_PIXELS]."""
    if isinstance(counts, np.ndarray):
        ok = counts.ndim == 1 and counts.dtype.kind in "iu"
    else:
        ok = isinstance(counts, (list, tuple)) and (set(map(type, counts)) <= {int} or all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts))
    if not ok:
        raise InvalidMask(f"counts is not a string or list of ints: got {describe(counts)}")
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


def describe(value) -> str:
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"{type(value).__name__} of {', '.join(kinds)}"
    return type(value).__name__


# ------------------------------------------------ polygons without the compiled kernel
def c_polygons(coords, po, ao, heights, widths, skip=None) -> tuple[list, np.ndarray]:
    """rleFrPoly per part, rleMerge when there are several, rleToString when it is safe,
    rleArea; annotations marked in ``skip`` are left as None."""
    n = len(heights)
    most = int(np.diff(ao).max()) if n else 0
    rles = (RLE * (most + 2))()  # the parts of one annotation, their union, a string holder
    size, first = ctypes.sizeof(RLE), ctypes.addressof(rles)
    merged, holder = first + most * size, rles[most + 1]
    areas = np.zeros(n, np.uint32)
    base, area_at = coords.ctypes.data, areas.ctypes.data
    po, ao, hs, ws = po.tolist(), ao.tolist(), heights.tolist(), widths.tolist()
    todo = range(n) if skip is None else np.flatnonzero(~skip).tolist()
    frpoly, merge, free, rle_area = C.rleFrPoly, C.rleMerge, C.rleFree, C.rleArea
    to_string, string_at = C.rleToString, ctypes.string_at
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
            if h * w < C_STRING_PIXELS:
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
        for (i, _), text in zip(large, to_strings(np.concatenate(runs), offsets)):
            out[i] = text
    return out, areas.astype(np.int64)


def py_polygons(coords, po, ao, heights, widths, skip=None) -> tuple[list, np.ndarray]:
    from pycocotools import mask as cmask

    out: list = [None] * len(heights)
    areas = np.zeros(len(heights), np.int64)
    for i in range(len(heights)):
        if skip is not None and skip[i]:
            continue
        parts = [coords[po[j]:po[j + 1]].tolist() for j in range(ao[i], ao[i + 1])]
        merged = cmask.merge(cmask.frPyObjects(parts, int(heights[i]), int(widths[i])))
        out[i], areas[i] = merged["counts"].decode("ascii"), int(cmask.area(merged))
    return out, areas

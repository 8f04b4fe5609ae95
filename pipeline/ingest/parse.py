"""parse: the bytes of one chunk → its records as Python objects.

Input: bytes between records of one top-level array (from ``scan``), the file's name, the
section and the chunk's byte offset (for messages). Output: a list of dicts/lists/values,
read by ``jsontext.loads`` (orjson, Python's parser for NaN and big integers); bad JSON is a
``BadFileError`` naming file, section and byte. ``parse_with_geometry`` also reads the
polygon segmentations and bboxes of annotation records (and the runs of uncompressed RLE
segmentations, as int64) straight from the bytes into flat arrays (``Geometry``, by the C extension ``pipeline._jsonpoly``), so that no Python
float is made per coordinate. ``parse_document`` reads a whole small document (a per-image
set's file, decompressed by ``sources.read_whole``). ``no_cyclic_gc`` wraps the task functions
that parse and flatten. Imports the shared core (errors, jsontext), ``scan``'s record limit and
``sources``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from typing import Callable, NamedTuple

import numpy as np

from ..errors import BadFileError
from ..jsontext import loads
from . import sources
from .scan import MAX_RECORD_BYTES

try:
    from .. import _jsonpoly
except ImportError:  # not built (a source tree used without installing): records only
    _jsonpoly = None

AVAILABLE = _jsonpoly is not None


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


class Geometry(NamedTuple):
    """The polygon segmentations and bboxes of some records of a chunk, as flat arrays.

    Record ``rows[k]`` (its position in the chunk) owns parts ann_parts[k]:ann_parts[k + 1];
    part j is x0, y0, x1, y1, ... in coords[part_offsets[j]:part_offsets[j + 1]]. Record
    ``box_rows[k]`` has the bbox boxes[k] ([x, y, width, height]). Each value is ``float()``
    of its literal, but an integer zero is +0.0 (what the int a JSON parser gives for ``-0``
    becomes in float64). In the records, these rows' segmentation and bbox are []. Record
    ``rle_rows[k]``'s segmentation is uncompressed RLE with the runs
    runs[run_offsets[k]:run_offsets[k + 1]] (each the int of its literal); in the records,
    its ``counts`` is [].
    """

    rows: np.ndarray  # int64, ascending
    coords: np.ndarray  # float64
    part_offsets: np.ndarray  # int64, from 0
    ann_parts: np.ndarray  # int64, len(rows) + 1, from 0
    box_rows: np.ndarray  # int64, ascending
    boxes: np.ndarray  # float64, (len(box_rows), 4)
    original: Callable[[], list]  # the chunk's records as written, segmentations included
    rle_rows: np.ndarray = np.zeros(0, np.int64)  # int64, ascending
    runs: np.ndarray = np.zeros(0, np.int64)  # int64
    run_offsets: np.ndarray = np.zeros(1, np.int64)  # int64, len(rle_rows) + 1, from 0

    def rle_runs(self) -> dict[int, np.ndarray]:
        """{row: its runs} of the rows in ``rle_rows``."""
        off = self.run_offsets.tolist()
        return {row: self.runs[off[k]:off[k + 1]] for k, row in enumerate(self.rle_rows.tolist())}


def _body(buf: bytes) -> tuple[int, bytes] | None:
    """The records of a chunk without its blanks and leading comma, and where they start in it."""
    body = buf.strip(b" \t\r\n")
    start = len(buf) - len(buf.lstrip(b" \t\r\n"))
    if body.startswith(b","):
        body, start = body[1:], start + 1
    return (start, body) if body.strip(b" \t\r\n") else None


def parse_with_geometry(buf: bytes, *, source: str, section: str, offset: int) -> tuple[list, Geometry | None]:
    """``parse_chunk``'s records, and as ``Geometry`` the polygon segmentations of the records
    whose ``segmentation`` has the plain form [[x, y, ...], ...] and the bboxes written as
    [x, y, width, height] (None when no record has one, or without the extension). The other records are parsed as written;
    bad JSON raises what ``parse_chunk`` raises."""
    if not AVAILABLE:
        return parse_chunk(buf, source=source, section=section, offset=offset), None
    framed = _jsonpoly.extract(buf)
    if framed is None:
        return [], None
    text, found = framed
    try:
        records = loads(text)
    except (ValueError, RecursionError):  # the messages of the text as written
        return parse_chunk(buf, source=source, section=section, offset=offset), None
    if found is None:
        return records, None
    rows, coords, part_offsets, ann_parts, box_rows, boxes, rle_rows, runs, run_offsets = (
        np.frombuffer(b, t) for b, t in zip(found, ("i8", "f8", "i8", "i8", "i8", "f8", "i8", "i8", "i8")))

    def original() -> list:
        return parse_chunk(buf, source=source, section=section, offset=offset)

    return records, Geometry(rows, coords, part_offsets, ann_parts, box_rows, boxes.reshape(-1, 4), original,
                             rle_rows, runs, run_offsets)


def parse_chunk(buf: bytes, *, source: str, section: str, offset: int) -> list:
    """The records of a chunk (bytes between records of one array) as Python objects."""
    framed = _body(buf)
    if framed is None:
        return []
    start, body = framed
    try:
        return loads(b"[" + body + b"]")
    except (ValueError, RecursionError) as err:  # the text is "[" + body + "]"
        raise _refusal(err, source, where=(section, offset), shift=offset + start - 1) from None


def parse_document(data: bytes, name: str, max_bytes: int = MAX_RECORD_BYTES):
    """The JSON value of a whole (small) document: gzip and a UTF-8 BOM are handled, a gzip
    document may decompress to at most ``max_bytes`` (``sources.read_whole``)."""
    data = sources.read_whole(data, name, max_bytes)
    if not data.strip():
        raise BadFileError(name, "the file is empty; expected a COCO JSON object")
    try:
        return loads(data)
    except (ValueError, RecursionError) as err:
        raise _refusal(err, name) from None


def _refusal(err: ValueError | RecursionError, source: str, *, where: tuple[str, int] | None = None,
            shift: int = 0) -> BadFileError:
    """The ``BadFileError`` for what ``jsontext.loads`` raised on the text of ``source``:
    ``where`` is (section, byte offset) for a chunk of a section (None: a whole document),
    ``shift`` the document's byte offset of the text's first byte."""
    prefix, near = (f"{where[0]}: ", f" near byte {where[1]}") if where else ("", "")
    if isinstance(err, UnicodeDecodeError):
        problem = f"bytes at {shift + err.start} are not UTF-8 text"
    elif isinstance(err, json.JSONDecodeError):  # pos counts characters of the decoded text
        problem = f"invalid JSON near byte {shift + len(err.doc[:err.pos].encode())}: {err.msg}"
    elif isinstance(err, RecursionError):
        problem = f"a record{near} is nested too deeply" if where else "nested too deeply"
    else:  # int() refuses more than sys.get_int_max_str_digits() digits
        problem = f"a number{near} has more digits than Python reads ({sys.get_int_max_str_digits()})"
    return BadFileError(source, prefix + problem)

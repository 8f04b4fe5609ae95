"""scan: cut a COCO JSON file into chunks of whole records without parsing it.

Input: the bytes of a file, read block by block (any size, any source). ``scan_document``
reads a document (``{...}``) into a ``DocumentLayout``: where each top-level record array
(``RECORD_SECTIONS``) starts and ends, byte ranges that each hold whole records (the chunks
tasks parse), record counts, and the *skeleton*: the document with those arrays emptied,
which keeps ``info``, the top-level key order and every unknown top-level key. ``scan_list``
reads a file whose top level is a list of records (a results file) into one ``Section``,
cut into chunks the same way. Both use ``structure.StructureScanner`` (one block in memory).

Guarantees: chunk boundaries fall between records; a file whose top level is not the
expected value, is truncated, has a record larger than ``max_record_bytes`` (default
``MAX_RECORD_BYTES``, 256 MB), top-level values other than the record arrays larger than
``max_skeleton_bytes`` (64 MB), or brackets nested deeper than ``max_depth`` (default
``MAX_DEPTH``, 128 levels counting the top-level value) raises ``BadFileError`` naming the
byte offset. Each is found while the bytes stream past, so hostile input (a gigabyte string,
a billion-element array, nesting thousands deep) fails in the memory of one block, before
any parser sees it. Real COCO nests 5 levels deep (object, ``annotations``, record,
``segmentation``, polygon); 128 keeps every record within what orjson reads and writes
(1024 and 254 levels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from ..defaults import DEFAULT_CHUNK_BYTES
from ..errors import BadFileError
from .structure import StructureScanner

RECORD_SECTIONS = ("images", "annotations", "categories", "licenses")

_WHITESPACE = b" \t\r\n"
_KEY_TAIL = 1 << 16  # bytes kept from the previous block to read a section's key
_HEAD_BYTES = 1 << 20  # bytes kept from the start of each section (to sniff its first record)
MAX_RECORD_BYTES = 256 << 20  # default limit on one record (SA-1B-sized RLE records are a few MB)
MAX_DEPTH = 128  # default limit on bracket nesting, the top-level value counting as 1


@dataclasses.dataclass
class Section:
    """A top-level record array, or a results file's list: ``[open, close]`` are its brackets' offsets."""

    name: str
    open: int
    close: int = -1
    records: int = 0
    is_array: bool = True
    # chunk boundaries: chunk i spans [bounds[i], bounds[i + 1])
    bounds: list[int] = dataclasses.field(default_factory=list)
    # index (within the array) of the first record of each chunk
    first_index: list[int] = dataclasses.field(default_factory=lambda: [0])
    max_record_bytes: int = 0
    head: bytes = b""

    def chunks(self) -> list[tuple[int, int]]:
        return list(zip(self.bounds[:-1], self.bounds[1:]))


@dataclasses.dataclass
class DocumentLayout:
    skeleton: bytes
    sections: dict[str, Section]
    size: int
    bom: int = 0


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What the top level of a scanned file must be, and the refusals that say so."""

    opener: bytes  # b"{" or b"["
    noun: str  # "unexpected data after the top-level <noun>"
    other: str  # what the top level is when it opens with the other bracket
    wrong: str  # what it is otherwise
    expected: str  # follows "the top level is ...; "
    empty: str  # follows "the file is empty; expected "


_OBJECT = _Shape(b"{", "object", "a list", "not a JSON object", "expected a COCO JSON object {...}",
                 "a COCO JSON object")
# the one list-shaped input is a results file (pycocotools' loadRes format)
_LIST = _Shape(b"[", "list", "an object (a ground-truth file?)", "not a JSON list",
               'a results file is a JSON list of detections [{"image_id", "category_id", "score", ...}, ...]',
               "a JSON list of detections")


class _TopLevel:
    """A file's one top-level value: how it opens, its nesting, nothing after its close, its end."""

    def __init__(self, shape: _Shape, source: str, max_depth: int):
        self.shape, self.source, self.max_depth = shape, source, max_depth
        self.started = False
        self.closed_at = -1
        self.bom = 0

    def feed(self, scanner: StructureScanner, block: bytes):
        """``scanner.feed(block)``, refusing a wrong first byte, data after the value's close,
        a close without its open and nesting deeper than ``max_depth``."""
        if self.closed_at >= 0 and block.strip(_WHITESPACE):
            self._after(self.closed_at + 1)
        if not self.started:
            if scanner.offset == 0 and block.startswith(b"\xef\xbb\xbf"):
                self.bom = 3
            first = block[self.bom if scanner.offset == 0 else 0:].lstrip(_WHITESPACE)[:1]
            if first and first != self.shape.opener:
                what = self.shape.other if first in b"{[" else self.shape.wrong
                raise BadFileError(self.source, f"the top level is {what}; {self.shape.expected}")
            self.started = bool(first)
        positions, depth_after, delta, quotes = scanner.feed(block)
        if depth_after.size and depth_after.min() < 0:
            bad = int(positions[np.argmax(depth_after < 0)])
            raise BadFileError(self.source, f"unbalanced brackets at byte {bad}; not valid JSON")
        if depth_after.size and depth_after.max() > self.max_depth:
            bad = int(positions[np.argmax(depth_after > self.max_depth)])
            raise BadFileError(self.source, f"brackets nested deeper than {self.max_depth} levels at byte "
                               f"{bad}; nesting that deep is not supported")
        return positions, depth_after, delta, quotes

    def close(self, block: bytes, block_start: int, pos: int) -> None:
        """The top-level value closes at ``pos``: only whitespace may follow."""
        self.closed_at = pos
        if block[pos + 1 - block_start:].strip(_WHITESPACE):
            self._after(pos + 1)

    def finish(self, scanner: StructureScanner) -> None:
        if not self.started:
            raise BadFileError(self.source, f"the file is empty; expected {self.shape.empty}")
        if scanner.in_string or scanner.depth != 0 or self.closed_at < 0:
            raise BadFileError(self.source, f"the file ends at byte {scanner.offset} inside an unfinished "
                               "value; it is truncated or not JSON")

    def _after(self, at: int):
        raise BadFileError(self.source, f"unexpected data after the top-level {self.shape.noun} at byte {at}")


def scan_document(
    blocks: Iterable[bytes],
    *,
    source: str,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_record_bytes: int = MAX_RECORD_BYTES,
    max_skeleton_bytes: int = 64 << 20,
    max_depth: int = MAX_DEPTH,
    compiled: bool | None = None,
) -> DocumentLayout:
    """Scan a whole document (an iterable of consecutive byte blocks) into its layout.

    ``compiled``: None uses the C scan when it is built; False and True force one.
    """
    # records end at depth 2 and top-level keys are strings at depth 1: nothing deeper is needed
    scanner = StructureScanner(compiled=compiled, keep=2, quote_depth=1, limit=max_depth)
    top = _TopLevel(_OBJECT, source, max_depth)
    sections: dict[str, Section] = {}
    skeleton = bytearray()
    current: Section | None = None  # the section whose interior we are in (record arrays only)
    last_end = -1  # offset of the last record end in the current section
    prev_tail = b""
    prev_tail_start = 0

    for block in blocks:
        if not block:
            continue
        block_start = scanner.offset
        positions, depth_after, delta, quotes = top.feed(scanner, block)

        # depth-1 events: a top-level value opens (depth 1 -> 2) or closes (2 -> 1)
        opens = np.flatnonzero((depth_after == 2) & (delta > 0))
        closes = np.flatnonzero((depth_after == 1) & (delta < 0))
        ends_top = np.flatnonzero((depth_after == 0) & (delta < 0))
        events = sorted([(int(i), "open") for i in opens] + [(int(i), "close") for i in closes]
                        + [(int(i), "end") for i in ends_top])
        # record ends inside record arrays: closes that bring the depth back to 2
        rec_mask = (depth_after == 2) & (delta < 0)
        rec_positions = positions[rec_mask]

        # skeleton bytes are copied from ``cursor`` on, unless inside a record array
        cursor = block_start if current is None else None
        seg_start = block_start - 1
        for idx, what in events:
            pos = int(positions[idx])
            if what == "open":
                if current is not None:
                    _add_records(current, rec_positions, seg_start, pos, last_end, chunk_bytes, source)
                key = _key_before(pos, quotes, block, block_start, prev_tail, prev_tail_start, scanner, source)
                is_array = block[pos - block_start] == ord("[")
                if key in RECORD_SECTIONS and is_array:
                    if key in sections:
                        raise BadFileError(source, f"the top-level key {key!r} appears twice")
                    current = Section(name=key, open=pos, bounds=[pos + 1])
                    sections[key] = current
                    last_end = pos
                    skeleton += block[cursor - block_start: pos + 1 - block_start]
                    cursor = None  # inside: copy nothing
                    seg_start = pos
            elif what == "close":
                if current is not None:
                    last_end = _add_records(current, rec_positions, seg_start, pos, last_end, chunk_bytes, source)
                    _keep_head(current, block, block_start, pos)
                    _finish_section(current, pos, last_end, max_record_bytes, source)
                    cursor = pos
                    current = None
                seg_start = pos
            else:  # end of the top-level object
                top.close(block, block_start, pos)
        if current is not None:
            last_end = _add_records(current, rec_positions, seg_start, scanner.offset, last_end, chunk_bytes, source)
            _keep_head(current, block, block_start, scanner.offset)
            _check_open_record(current, scanner.offset, last_end, max_record_bytes, source)
        closed_at = top.closed_at
        if cursor is not None and (closed_at < 0 or closed_at >= block_start):
            end = closed_at + 1 if closed_at >= 0 else scanner.offset
            skeleton += block[cursor - block_start: end - block_start]
            if len(skeleton) > max_skeleton_bytes:
                raise BadFileError(
                    source,
                    f"the top-level values other than {', '.join(RECORD_SECTIONS)} exceed "
                    f"{max_skeleton_bytes >> 20} MB",
                )
        prev_tail = (prev_tail + block[-_KEY_TAIL:])[-_KEY_TAIL:]
        prev_tail_start = scanner.offset - len(prev_tail)

    top.finish(scanner)
    return DocumentLayout(skeleton=bytes(skeleton[top.bom:] if skeleton.startswith(b"\xef\xbb\xbf") else skeleton),
                          sections=sections, size=scanner.offset, bom=top.bom)


def scan_list(
    blocks: Iterable[bytes],
    *,
    source: str,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_record_bytes: int = MAX_RECORD_BYTES,
    max_depth: int = MAX_DEPTH,
    compiled: bool | None = None,
) -> Section:
    """Scan a file whose top level is a list of records (a results file) into one section.

    The section is the list itself (``name`` "results"), cut into chunks as a document's
    record arrays are, with the same limits; the file's shape is refused in the same way.
    """
    scanner = StructureScanner(compiled=compiled, keep=1, quote_depth=-1, limit=max_depth)
    top = _TopLevel(_LIST, source, max_depth)
    section: Section | None = None
    last_end = -1
    for block in blocks:
        if not block:
            continue
        block_start = scanner.offset
        positions, depth_after, delta, _ = top.feed(scanner, block)
        if section is None and positions.size:  # the first structural byte is the list's "["
            section = Section(name="results", open=int(positions[0]), bounds=[int(positions[0]) + 1])
            last_end = section.open
        if section is None:
            continue
        rec_positions = positions[(depth_after == 1) & (delta < 0)]
        closes = positions[(depth_after == 0) & (delta < 0)]
        hi = int(closes[0]) if closes.size else scanner.offset
        last_end = _add_records(section, rec_positions, block_start - 1, hi, last_end, chunk_bytes, source)
        if closes.size:
            top.close(block, block_start, hi)
            _finish_section(section, hi, last_end, max_record_bytes, source)
        else:
            _check_open_record(section, scanner.offset, last_end, max_record_bytes, source)
    top.finish(scanner)
    return section


def _key_before(pos, quotes, block, block_start, prev_tail, prev_tail_start, scanner, source) -> str:
    """The key of the top-level value that opens at ``pos``: the last string before it."""
    before = quotes[quotes < pos]
    if before.size >= 2:
        a, b = int(before[-2]), int(before[-1])
    else:
        earlier = scanner.quotes_before_block
        pair = (earlier + before.tolist())[-2:]
        if len(pair) < 2:
            raise BadFileError(source, f"a value at byte {pos} has no key; not a JSON object")
        a, b = pair
    if a >= block_start:
        raw = block[a + 1 - block_start: b - block_start]
        between = block[b + 1 - block_start: pos - block_start]
    else:
        joined = prev_tail + block
        base = prev_tail_start
        if a < base:
            raise BadFileError(source, f"a top-level key before byte {pos} is longer than {_KEY_TAIL} bytes")
        raw = joined[a + 1 - base: b - base]
        between = joined[b + 1 - base: pos - base]
    if between.strip(_WHITESPACE) != b":":
        raise BadFileError(source, f"unexpected bytes before the value at byte {pos}; not valid JSON")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _add_records(section: Section, rec_positions, lo, hi, last_end, chunk_bytes, source) -> int:
    """Account the record ends in (lo, hi) to ``section``; cut chunks; return the last end."""
    ends = rec_positions[(rec_positions > lo) & (rec_positions < hi)]
    if ends.size == 0:
        return last_end
    before = section.records
    section.records += int(ends.size)
    gaps = np.diff(ends, prepend=last_end)
    section.max_record_bytes = max(section.max_record_bytes, int(gaps.max()))
    start = section.bounds[-1]
    while True:
        k = int(np.searchsorted(ends, start + chunk_bytes - 1))
        if k >= ends.size:
            break
        boundary = int(ends[k]) + 1
        section.bounds.append(boundary)
        section.first_index.append(before + k + 1)
        start = boundary
    return int(ends[-1])


def _keep_head(section: Section, block: bytes, block_start: int, hi: int) -> None:
    if len(section.head) < _HEAD_BYTES:
        lo = max(section.open + 1, block_start)
        hi = min(hi, lo + _HEAD_BYTES - len(section.head))
        section.head += block[lo - block_start: hi - block_start]


def _check_open_record(section: Section, offset: int, last_end: int, max_record_bytes: int, source: str) -> None:
    """At the end of a block inside ``section``: the record still open must stay bounded."""
    if offset - last_end > max_record_bytes:
        raise BadFileError(
            source,
            f"{section.name}: a record starting near byte {last_end + 1} is larger than "
            f"{max_record_bytes >> 20} MB; records that large are not supported",
        )


def _finish_section(section: Section, close: int, last_end: int, max_record_bytes: int, source: str) -> None:
    section.close = close
    if section.bounds[-1] != close:
        section.bounds.append(close)
    # a trailing stretch with no record end (scalars, or one giant record) must stay bounded
    if close - last_end > max_record_bytes or section.max_record_bytes > max_record_bytes:
        raise BadFileError(
            source,
            f"{section.name}: a record is larger than {max_record_bytes >> 20} MB; "
            "records that large are not supported",
        )
    if section.bounds[0] == close:  # empty array
        section.bounds = [close, close]
    if section.bounds[-1] == section.bounds[-2] and len(section.bounds) > 2:
        section.bounds.pop()
        section.first_index.pop()
    del section.first_index[len(section.bounds) - 1:]


def iter_blocks(fileobj, block_bytes: int = 16 << 20) -> Iterator[bytes]:
    while True:
        block = fileobj.read(block_bytes)
        if not block:
            return
        yield block


def record_spans(buf: bytes) -> list[tuple[int, int]]:
    """Byte spans of the depth-0 values in ``buf`` (a chunk: records separated by commas).

    Used by tasks to cut their chunk into smaller batches; objects and arrays only.
    """
    scanner = StructureScanner(depth=0, keep=1, quote_depth=-1)
    positions, depth_after, delta, _ = scanner.feed(buf)
    starts = positions[(depth_after == 1) & (delta > 0)]
    ends = positions[(depth_after == 0) & (delta < 0)]
    return list(zip(starts.tolist(), (ends + 1).tolist()))

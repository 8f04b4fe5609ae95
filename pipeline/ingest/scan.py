"""scan: cut one COCO JSON document into independent chunks without parsing it.

Input: the bytes of a document, read block by block (any size, any source).
Output: a ``DocumentLayout``: where each top-level record array (``images``,
``annotations``, ``categories``, ``licenses``) starts and ends, byte ranges that each hold
whole records (the chunks tasks parse), record counts, and the *skeleton*: the document
with those arrays emptied, which keeps ``info``, the top-level key order and every
unknown top-level key.

How: a structural scan, one block at a time, by the C extension ``pipeline._jsonscan``
(NumPy when it is not built: ``COMPILED`` is False; both give the same results). Quotes
preceded by an odd run of backslashes are escaped; the parity of the remaining quotes says
which bytes are inside strings; brackets and braces outside strings give the nesting depth.
A record of a top-level array ends where a closing bracket brings the depth back to 2.
Only the few depth-1 events (section starts and ends) are handled in Python, so the scan
runs at memory bandwidth rather than Python speed, and its memory is one block.

Guarantees: chunk boundaries fall between records; a document that is not a JSON object,
is truncated, has a record larger than ``max_record_bytes`` (default ``MAX_RECORD_BYTES``,
256 MB), top-level values other than the record arrays larger than ``max_skeleton_bytes``
(64 MB), or brackets nested deeper than ``max_depth`` (default ``MAX_DEPTH``, 128 levels
counting the top-level object) raises ``BadFileError`` naming the byte offset. Each is
found while the bytes stream past, so hostile input (a gigabyte string, a billion-element
array, nesting thousands deep) fails in the memory of one block, before any parser sees it.
Real COCO nests 5 levels deep (object, ``annotations``, record, ``segmentation``,
polygon); 128 keeps every record within what orjson reads and writes (1024 and 254 levels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np

from ..defaults import DEFAULT_CHUNK_BYTES
from ..errors import BadFileError

try:
    from .. import _jsonscan
except ImportError:  # not built (a source tree used without installing): the NumPy scan
    _jsonscan = None

COMPILED = _jsonscan is not None

RECORD_SECTIONS = ("images", "annotations", "categories", "licenses")

_C_QUOTE, _C_BACKSLASH, _C_OPEN, _C_CLOSE = 1, 2, 3, 4
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[ord('"')] = _C_QUOTE
_CLASS[ord("\\")] = _C_BACKSLASH
_CLASS[ord("{")] = _CLASS[ord("[")] = _C_OPEN
_CLASS[ord("}")] = _CLASS[ord("]")] = _C_CLOSE
_WHITESPACE = b" \t\r\n"
_KEY_TAIL = 1 << 16  # bytes kept from the previous block to read a section's key
_HEAD_BYTES = 1 << 20  # bytes kept from the start of each section (to sniff its first record)
MAX_RECORD_BYTES = 256 << 20  # default limit on one record (SA-1B-sized RLE records are a few MB)
MAX_DEPTH = 128  # default limit on bracket nesting, the top-level object counting as 1


@dataclasses.dataclass
class Section:
    """A top-level record array: ``[open, close]`` are the offsets of its brackets."""

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


class StructureScanner:
    """Incremental scan of JSON bytes: string state, depth and the depth-2 closings.

    ``feed(block)`` returns the structural positions (absolute offsets), their depth after
    the byte, and the delta (+1 open, -1 close) for the bytes of ``block`` outside strings.
    """

    def __init__(self, offset: int = 0, depth: int = 0, compiled: bool | None = None):
        if compiled and not COMPILED:
            raise RuntimeError("pipeline._jsonscan is not built")
        self.compiled = COMPILED if compiled is None else compiled
        self.offset = offset
        self.depth = depth
        self.in_string = False
        self.backslash_run = 0  # length of the backslash run that ended the previous block
        self.last_quotes: list[int] = []  # absolute offsets of the last two real quotes
        self.quotes_before_block: list[int] = []

    def feed(self, block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.quotes_before_block = list(self.last_quotes)
        if self.compiled:
            return self._feed_compiled(block)
        arr = np.frombuffer(block, dtype=np.uint8)
        n = arr.size
        # one pass over the bytes: the positions of every quote, backslash and bracket
        hits = np.flatnonzero(_CLASS[arr])
        cls = _CLASS[arr[hits]]
        quotes = hits[cls == _C_QUOTE]
        backslashes = hits[cls == _C_BACKSLASH]
        if backslashes.size or self.backslash_run:
            quotes = self._drop_escaped(quotes, backslashes, n)
        else:
            self.backslash_run = 0
        is_struct = cls >= _C_OPEN
        structural = hits[is_struct]
        delta = np.where(cls[is_struct] == _C_OPEN, 1, -1).astype(np.int64)
        if quotes.size:
            inside = (np.searchsorted(quotes, structural) + int(self.in_string)) & 1
            outside = inside == 0
            structural, delta = structural[outside], delta[outside]
        elif self.in_string:
            structural, delta = structural[:0], delta[:0]
        depth_after = self.depth + np.cumsum(delta)
        if quotes.size:
            self.in_string = bool((int(self.in_string) + quotes.size) & 1)
            tail = (quotes[-2:] + self.offset).tolist()
            self.last_quotes = (self.last_quotes + tail)[-2:]
        if depth_after.size:
            self.depth = int(depth_after[-1])
        abs_quotes = quotes + self.offset
        positions = structural + self.offset
        self.offset += n
        return positions, depth_after, delta, abs_quotes

    def _feed_compiled(self, block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out = _jsonscan.feed(block, self.offset, self.depth, self.in_string, self.backslash_run)
        positions, depth_after, delta, quotes = (np.frombuffer(a, dtype=np.int64) for a in out[:4])
        self.depth, self.in_string, self.backslash_run = out[4], bool(out[5]), out[6]
        if quotes.size:
            self.last_quotes = (self.last_quotes + quotes[-2:].tolist())[-2:]
        self.offset += len(block)
        return positions, depth_after, delta, quotes

    def _drop_escaped(self, quotes: np.ndarray, backslashes: np.ndarray, n: int) -> np.ndarray:
        escaped: list[int] = []
        carry = self.backslash_run
        if backslashes.size == 0:
            if carry & 1:
                escaped.append(0)
            self.backslash_run = 0
        else:
            breaks = np.flatnonzero(np.diff(backslashes) != 1)
            starts = np.concatenate(([backslashes[0]], backslashes[breaks + 1]))
            ends = np.concatenate((backslashes[breaks], [backslashes[-1]]))
            lengths = ends - starts + 1
            if starts[0] == 0:
                lengths[0] += carry
            elif carry & 1:
                escaped.append(0)
            odd = (lengths & 1) == 1
            escaped.extend((ends[odd] + 1).tolist())
            self.backslash_run = int(lengths[-1]) if ends[-1] == n - 1 else 0
        if not escaped or quotes.size == 0:
            return quotes
        return quotes[~np.isin(quotes, np.asarray(escaped))]


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
    scanner = StructureScanner(compiled=compiled)
    sections: dict[str, Section] = {}
    skeleton = bytearray()
    current: Section | None = None  # the section whose interior we are in (record arrays only)
    last_end = -1  # offset of the last record end in the current section
    prev_tail = b""
    prev_tail_start = 0
    started = False
    closed_at = -1
    bom = 0
    size = 0

    for block in blocks:
        if not block:
            continue
        block_start = scanner.offset
        if not started:
            if block_start == 0 and block.startswith(b"\xef\xbb\xbf"):
                bom = 3
            stripped = block[bom:].lstrip(_WHITESPACE)
            if stripped:
                if stripped[:1] != b"{":
                    what = "a list" if stripped[:1] == b"[" else "not a JSON object"
                    raise BadFileError(source, f"the top level is {what}; expected a COCO JSON object {{...}}")
                started = True
        if closed_at >= 0 and block.strip(_WHITESPACE):
            raise BadFileError(source, f"unexpected data after the top-level object at byte {closed_at + 1}")
        positions, depth_after, delta, quotes = scanner.feed(block)
        size = scanner.offset
        if depth_after.size and depth_after.min() < 0:
            bad = int(positions[np.argmax(depth_after < 0)])
            raise BadFileError(source, f"unbalanced brackets at byte {bad}; not valid JSON")
        if depth_after.size and depth_after.max() > max_depth:
            bad = int(positions[np.argmax(depth_after > max_depth)])
            raise BadFileError(
                source, f"brackets nested deeper than {max_depth} levels at byte {bad}; "
                "nesting that deep is not supported"
            )

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
                closed_at = pos
                rest = block[pos + 1 - block_start:]
                if rest.strip(_WHITESPACE):
                    raise BadFileError(
                        source, f"unexpected data after the top-level object at byte {pos + 1}"
                    )
        if current is not None:
            last_end = _add_records(current, rec_positions, seg_start, scanner.offset, last_end, chunk_bytes, source)
            _keep_head(current, block, block_start, scanner.offset)
            if scanner.offset - last_end > max_record_bytes:
                raise BadFileError(
                    source,
                    f"{current.name}: a record starting near byte {last_end + 1} is larger than "
                    f"{max_record_bytes >> 20} MB; records that large are not supported",
                )
        if cursor is not None and (closed_at < 0 or closed_at >= block_start):
            end = closed_at + 1 if closed_at >= 0 else scanner.offset
            skeleton += block[cursor - block_start: end - block_start]
            if len(skeleton) > max_skeleton_bytes:
                raise BadFileError(
                    source,
                    f"the top-level values other than {', '.join(RECORD_SECTIONS)} exceed "
                    f"{max_skeleton_bytes >> 20} MB",
                )
        prev_tail = (prev_tail + block)[-_KEY_TAIL:]
        prev_tail_start = scanner.offset - len(prev_tail)

    if not started:
        raise BadFileError(source, "the file is empty; expected a COCO JSON object")
    if scanner.in_string or scanner.depth != 0 or closed_at < 0:
        raise BadFileError(
            source, f"the file ends at byte {size} inside an unfinished value; it is truncated or not JSON"
        )
    return DocumentLayout(skeleton=bytes(skeleton[bom:] if skeleton.startswith(b"\xef\xbb\xbf") else skeleton),
                          sections=sections, size=size, bom=bom)


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
    scanner = StructureScanner(depth=0)
    positions, depth_after, delta, _ = scanner.feed(buf)
    starts = positions[(depth_after == 1) & (delta > 0)]
    ends = positions[(depth_after == 0) & (delta < 0)]
    return list(zip(starts.tolist(), (ends + 1).tolist()))

"""structure: where the strings and brackets of JSON bytes are, one block at a time.

``StructureScanner.feed(block)`` gives the offsets of the brackets and braces outside strings
and the nesting depth after each; ``scan`` builds its chunks on it, ``tasks`` cuts chunks into
batches with it. How: quotes preceded by an odd run of backslashes are escaped; the parity of
the remaining quotes says which bytes are inside strings; brackets outside strings give the
depth. The C extension ``pipeline._jsonscan`` does it (NumPy when it is not built:
``COMPILED`` is False; both give the same results), so a scan runs at memory bandwidth rather
than Python speed. A caller that needs only the shallow structure says so (``keep``,
``quote_depth``, ``limit``): the record arrays' own brackets (most of them) are then never
output, only counted into the depth. Imports NumPy and the extension only.
"""

from __future__ import annotations

import numpy as np

try:
    from .. import _jsonscan
except ImportError:  # not built (a source tree used without installing): the NumPy scan
    _jsonscan = None

COMPILED = _jsonscan is not None

_C_QUOTE, _C_BACKSLASH, _C_OPEN, _C_CLOSE = 1, 2, 3, 4
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[ord('"')] = _C_QUOTE
_CLASS[ord("\\")] = _C_BACKSLASH
_CLASS[ord("{")] = _CLASS[ord("[")] = _C_OPEN
_CLASS[ord("}")] = _CLASS[ord("]")] = _C_CLOSE


class StructureScanner:
    """Incremental scan of JSON bytes: string state, depth and the depth-2 closings.

    ``feed(block)`` returns the structural positions (absolute offsets), their depth after
    the byte, and the delta (+1 open, -1 close) for the bytes of ``block`` outside strings,
    and the offsets of the quotes that open or close a string.

    What is output can be narrowed (the state is the same either way): ``keep``, only the
    brackets whose depth after is at most ``keep``, or above ``limit`` (nesting the caller
    refuses); ``quote_depth``, only the quotes at a depth of at most that (the depth after
    the last bracket before them). None outputs all.
    """

    def __init__(self, offset: int = 0, depth: int = 0, compiled: bool | None = None, *,
                 keep: int | None = None, quote_depth: int | None = None, limit: int | None = None):
        if compiled and not COMPILED:
            raise RuntimeError("pipeline._jsonscan is not built")
        self.compiled = COMPILED if compiled is None else compiled
        self.keep, self.quote_depth, self.limit = keep, quote_depth, limit
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
        final_depth = int(depth_after[-1]) if depth_after.size else self.depth
        if self.quote_depth is not None and quotes.size:
            k = np.searchsorted(structural, quotes)  # brackets before each quote
            at = np.where(k > 0, depth_after[np.maximum(k - 1, 0)], self.depth) if depth_after.size \
                else np.full(quotes.size, self.depth)
            quotes = quotes[at <= self.quote_depth]
        if self.keep is not None:
            shown = depth_after <= self.keep
            if self.limit is not None:
                shown |= depth_after > self.limit
            structural, depth_after, delta = structural[shown], depth_after[shown], delta[shown]
        if quotes.size:
            tail = (quotes[-2:] + self.offset).tolist()
            self.last_quotes = (self.last_quotes + tail)[-2:]
        self.depth = final_depth
        abs_quotes = quotes + self.offset
        positions = structural + self.offset
        self.offset += n
        return positions, depth_after, delta, abs_quotes

    def _feed_compiled(self, block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out = _jsonscan.feed(block, self.offset, self.depth, self.in_string, self.backslash_run,
                             *_c_bounds(self.keep, self.quote_depth, self.limit))
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


_ALL = (1 << 63) - 1  # the C scan's "no bound"


def _c_bounds(keep, quote_depth, limit) -> tuple[int, int, int]:
    return tuple(_ALL if x is None else x for x in (keep, quote_depth, limit))

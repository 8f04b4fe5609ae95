"""The C structural scan (pipeline._jsonscan) against the NumPy one: the same arrays, the same
state after every block, the same layouts and the same errors, on coco-mini and on fuzzed
bytes cut into blocks anywhere."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import BadFileError
from pipeline.ingest import structure
from pipeline.ingest.scan import scan_document, scan_list
from pipeline.ingest.structure import StructureScanner

needs_scan = pytest.mark.skipif(not structure.COMPILED, reason="pipeline._jsonscan is not built")
EXAMPLES = int(os.environ.get("COCOLAKE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_extension_is_built_in_ci():
    if os.environ.get("CI") != "true":
        pytest.skip("only CI guarantees an installed build")
    assert structure.COMPILED, "pipeline._jsonscan did not build; the scan fell back to NumPy"


def _state(s: StructureScanner):
    return (s.offset, s.depth, s.in_string, s.backslash_run, s.last_quotes, s.quotes_before_block)


@pytest.fixture(params=[2, 1, 0], ids=["avx2", "sse2-popcnt", "sse2"])
def isa(request):
    """Each of the C scan's word loops in turn (those this CPU lacks fall back to the next)."""
    from pipeline import _jsonscan

    previous = _jsonscan.isa_cap(request.param)
    yield request.param
    _jsonscan.isa_cap(previous)


def assert_same_feed(raw: bytes, cuts: list[int], depth: int = 0, **narrow):
    """Feed ``raw`` cut at ``cuts`` to both scanners; every output and state must agree.

    Returns the C scanner's outputs, concatenated over the blocks.
    """
    c = StructureScanner(depth=depth, compiled=True, **narrow)
    n = StructureScanner(depth=depth, compiled=False, **narrow)
    bounds = [0, *sorted(set(x for x in cuts if 0 < x < len(raw))), len(raw)]
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out_c, out_n = c.feed(raw[a:b]), n.feed(raw[a:b])
        for x, y in zip(out_c, out_n):
            assert x.dtype == np.int64 and y.dtype == np.int64
            np.testing.assert_array_equal(x, y)
        assert _state(c) == _state(n), (a, b)
        outs.append(out_c)
    return [np.concatenate(col) if col else np.zeros(0, np.int64) for col in zip(*outs)] or [np.zeros(0, np.int64)] * 4


def assert_narrowed_is_filtered(raw: bytes, cuts: list[int], depth: int, keep: int, quote_depth: int, limit: int):
    """A narrowed scan outputs exactly the full scan's brackets at depth <= keep or > limit and
    its quotes at depth <= quote_depth, with the same state, in C and in NumPy."""
    pos, after, delta, quotes = assert_same_feed(raw, cuts, depth)
    got = assert_same_feed(raw, cuts, depth, keep=keep, quote_depth=quote_depth, limit=limit)
    shown = (after <= keep) | (after > limit)
    for x, y in zip(got[:3], (pos[shown], after[shown], delta[shown])):
        np.testing.assert_array_equal(x, y)
    k = np.searchsorted(pos, quotes)
    at = np.where(k > 0, after[np.maximum(k - 1, 0)], depth) if after.size else np.full(quotes.size, depth)
    np.testing.assert_array_equal(got[3], quotes[at <= quote_depth])


def _scan_both(raw: bytes, block: int, scan=scan_document, **kw):
    out = []
    for compiled in (True, False):
        blocks = (raw[i: i + block] for i in range(0, len(raw), block))
        try:
            out.append(scan(blocks, source="f.json", compiled=compiled, **kw))
        except BadFileError as err:
            out.append(str(err))
    return out


@needs_scan
@pytest.mark.parametrize("block", [1 << 12, 1 << 16, 1 << 24])
def test_every_coco_mini_file_scans_the_same(coco_mini, block):
    files = sorted((coco_mini / "annotations").glob("*.json"))
    assert files
    for path in files:
        raw = path.read_bytes()
        assert_same_feed(raw, list(range(block, len(raw), block)))
        compiled, numpy = _scan_both(raw, block, chunk_bytes=1 << 14)
        assert compiled == numpy, path.name


# JSON text whose strings are full of what the scan must get right
tricky_text = st.text(alphabet=st.sampled_from('\\"[]{}ab ,:\u00e9\u2603'), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=30,
)


@needs_scan
@FUZZ
@given(value=json_values, cuts=st.lists(st.integers(0, 2000), max_size=12), ascii=st.booleans())
def test_fuzzed_json_cut_anywhere_scans_the_same(value, cuts, ascii):
    raw = json.dumps(value, ensure_ascii=ascii).encode()
    assert_same_feed(raw, cuts)


@needs_scan
@FUZZ
@given(raw=st.binary(max_size=400) | st.lists(st.sampled_from(list(b'\\\\\\"[]{}x')), max_size=400).map(bytes),
       cuts=st.lists(st.integers(0, 400), max_size=20), depth=st.integers(-2, 3))
def test_any_bytes_cut_anywhere_scan_the_same(raw, cuts, depth):
    # runs of backslashes across block boundaries, quotes outside strings, unbalanced brackets
    assert_same_feed(raw, cuts, depth)


@needs_scan
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # isa: set once
@given(pieces=st.lists(st.sampled_from([b'[', b']', b'{', b'}', b'[[[', b']]]', b'"', b'"a[b"', b'"}{"', b' ' * 30,
                                        b'12345,', b'"k":', b'\\', b'"x\\"]"', b'\\\\']), min_size=20, max_size=200),
       escapes=st.booleans(), cuts=st.lists(st.integers(0, 1500), max_size=6), depth=st.integers(-1, 4),
       keep=st.integers(-1, 4), quote_depth=st.integers(-1, 4), limit=st.integers(0, 8))
def test_a_narrowed_scan_outputs_the_full_scans_shallow_part(isa, pieces, escapes, cuts, depth, keep, quote_depth,
                                                              limit):
    # long enough for many 64-byte words: words skipped whole, words whose brackets are read
    # one by one, words with a backslash (or one just before them) read byte by byte
    raw = b"".join(p for p in pieces if escapes or b"\\" not in p)
    assert_narrowed_is_filtered(raw, cuts, depth, keep, quote_depth, limit)


@needs_scan
@pytest.mark.parametrize("backslashes", [1, 2, 3])
def test_an_escape_that_ends_a_word_escapes_the_quote_that_starts_the_next(isa, backslashes):
    # the backslash run lands on every offset around the 64-byte word boundaries, in one block
    # and cut between blocks there
    for k in range(40, 140):
        text = "x" * k + "\\" * (backslashes // 2) + ('"' if backslashes % 2 else "") + "]]}[" + " " * 70
        raw = json.dumps({"a": [[[text, [1, 2]], 3]], "b": [[4]]}).encode()
        at = raw.index(b"\\")
        for cuts in ([], [at + 1], [at + 2], [64], [128]):
            for keep, quote_depth in ((0, -1), (1, 0), (2, 1)):
                assert_narrowed_is_filtered(raw, cuts, 0, keep, quote_depth, limit=128)


@needs_scan
@pytest.mark.parametrize("block", [1 << 12, 1 << 24])
def test_coco_mini_narrowed_as_a_document_scan_narrows_it(isa, coco_mini, block):
    for path in sorted((coco_mini / "annotations").glob("*.json")):
        raw = path.read_bytes()
        assert_narrowed_is_filtered(raw, list(range(block, len(raw), block)), 0, keep=2, quote_depth=1, limit=128)
        assert_narrowed_is_filtered(raw, list(range(block, len(raw), block)), 0, keep=0, quote_depth=-1, limit=3)


@needs_scan
@FUZZ
@given(records=st.lists(json_values, max_size=12), block=st.integers(1, 300), chunk=st.integers(1, 400),
       indent=st.sampled_from([None, 1]), info=json_values)
def test_fuzzed_documents_give_the_same_layout(records, block, chunk, indent, info):
    doc = {"info": info, "images": records, "annotations": records[::-1], "extra": info}
    raw = json.dumps(doc, indent=indent).encode()
    compiled, numpy = _scan_both(raw, block, chunk_bytes=chunk)
    assert compiled == numpy
    assert not isinstance(compiled, str)


@needs_scan
@FUZZ
@given(raw=st.lists(st.sampled_from([b'{', b'}', b'[', b']', b'"', b'\\', b'"a"', b':', b',', b'1', b' ',
                                     b'"images"', b'"annotations"', b'\xef\xbb\xbf']), max_size=60).map(b"".join),
       block=st.integers(1, 40), max_depth=st.integers(1, 6))
def test_broken_documents_fail_with_the_same_message(raw, block, max_depth):
    compiled, numpy = _scan_both(raw, block, chunk_bytes=8, max_record_bytes=64, max_depth=max_depth)
    assert compiled == numpy
    # and read as a results list (a top-level list of records)
    compiled, numpy = _scan_both(b"[" + raw, block, scan_list, chunk_bytes=8, max_record_bytes=64, max_depth=max_depth)
    assert compiled == numpy


def test_a_scanner_cannot_be_forced_onto_a_missing_extension(monkeypatch):
    monkeypatch.setattr(structure, "COMPILED", False)  # as in a source tree used without building
    with pytest.raises(RuntimeError, match="not built"):
        StructureScanner(compiled=True)
    assert StructureScanner().compiled is False  # the default falls back to NumPy

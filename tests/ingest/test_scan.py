"""scan: documents → sections, chunks and skeleton, and results lists → chunks, checked against json.loads."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BadFileError
from pipeline.ingest.scan import record_spans, scan_document, scan_list


def _blocks(raw: bytes, size: int):
    return (raw[i: i + size] for i in range(0, len(raw), size))


def _records(raw: bytes, section) -> list:
    out = []
    for (a, b), first in zip(section.chunks(), section.first_index):
        assert first == len(out)
        body = raw[a:b].strip(b" \t\r\n,")
        out += orjson.loads(b"[" + body + b"]")
    return out


@pytest.mark.parametrize("block, chunk", [(61, 20000), (4096, 1), (1 << 22, 1 << 30)])
def test_chunks_hold_exactly_the_records_of_every_coco_mini_file(coco_mini, block, chunk):
    for path in sorted((coco_mini / "annotations").glob("*.json")):
        raw = path.read_bytes()
        doc = json.loads(raw)
        layout = scan_document(_blocks(raw, block), source=path.name, chunk_bytes=chunk)
        skeleton = json.loads(layout.skeleton)
        assert list(skeleton) == list(doc)
        assert skeleton["info"] == doc["info"]
        for name, section in layout.sections.items():
            assert _records(raw, section) == doc[name]
            assert section.records == len(doc[name])


TRICKY = {
    "info": {"note": "brackets in strings: ] } [ { and escaped quotes \\\" and backslashes \\\\"},
    "type": "instances",
    "images": [
        {"id": 1, "file_name": "a\\\"]},{\"x.jpg", "height": 2, "width": 3},
        {"id": 2, "file_name": "\\\\", "height": 2, "width": 3, "nested": [[{"a": []}]]},
    ],
    "annotations": [],
    "categories": [{"id": 1, "name": "ünïcødé \u2603"}],
    "extra_list": [1, 2, 3],
}


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
def test_strings_escapes_and_unknown_keys_survive_any_block_size(block):
    raw = json.dumps(TRICKY, ensure_ascii=False).encode()
    layout = scan_document(_blocks(raw, block), source="t.json", chunk_bytes=1)
    skeleton = json.loads(layout.skeleton)
    assert list(skeleton) == list(TRICKY)
    assert skeleton["extra_list"] == [1, 2, 3] and skeleton["type"] == "instances"
    assert skeleton["images"] == [] and skeleton["annotations"] == []
    for name in ("images", "annotations", "categories"):
        assert _records(raw, layout.sections[name]) == TRICKY[name]


json_records = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 10**6), "s": st.text(max_size=12), "v": st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=5)}
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(records=json_records, block=st.integers(1, 300), chunk=st.integers(1, 500), indent=st.sampled_from([None, 1]))
def test_any_records_any_blocks(records, block, chunk, indent):
    doc = {"images": records, "annotations": records[::-1]}
    raw = json.dumps(doc, indent=indent).encode()
    layout = scan_document(_blocks(raw, block), source="h.json", chunk_bytes=chunk)
    assert _records(raw, layout.sections["images"]) == records
    assert _records(raw, layout.sections["annotations"]) == records[::-1]


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"[1, 2]", "top level is a list"),
        (b'"text"', "not a JSON object"),
        (b'{"images": [{"id": 1}', "truncated"),
        (b'{"images": [{"id": "abc}]}', "truncated"),
        (b'{"images": []}}', "unbalanced"),
        (b'{"images": []} {"x": 1}', "after the top-level object"),
        (b'{"images": [], "images": []}', "appears twice"),
    ],
)
def test_whole_file_problems_name_the_file(raw, message):
    with pytest.raises(BadFileError, match=message) as err:
        scan_document(_blocks(raw, 3), source="bad.json")
    assert str(err.value).startswith("bad.json: ")


def test_a_huge_array_of_scalars_is_refused_not_loaded():
    raw = b'{"images": [], "annotations": [' + b"0," * 5000 + b"0]}"
    with pytest.raises(BadFileError, match="larger than"):
        scan_document(_blocks(raw, 1000), source="zeros.json", max_record_bytes=1000)


def test_bom_is_accepted():
    raw = b"\xef\xbb\xbf" + json.dumps({"images": [{"id": 1}]}).encode()
    layout = scan_document(_blocks(raw, 4), source="bom.json")
    assert layout.bom == 3
    assert json.loads(layout.skeleton) == {"images": []}


def test_record_spans():
    buf = b' {"a": "}"}, [1, [2]] ,{"b": {}}'
    spans = record_spans(buf)
    assert [json.loads(buf[a:b]) for a, b in spans] == [{"a": "}"}, [1, [2]], {"b": {}}]


@pytest.mark.parametrize("where", ["record", "info"])
def test_nesting_deeper_than_the_limit_is_refused(where):
    deep = b"[" * 100_000 + b"]" * 100_000
    raw = (b'{"images": [{"id": 1, "x": ' + deep + b"}]}" if where == "record"
           else b'{"info": ' + deep + b', "images": []}')
    with pytest.raises(BadFileError, match=r"^deep.json: brackets nested deeper than 128 levels at byte \d+"):
        scan_document(_blocks(raw, 4096), source="deep.json")


def test_nesting_up_to_the_limit_is_accepted():
    # the top-level object, "images" and the record are 3 levels; 125 more make 128
    inner = b"[" * 125 + b"]" * 125
    raw = b'{"images": [{"id": 1, "x": ' + inner + b"}]}"
    layout = scan_document(_blocks(raw, 7), source="ok.json", max_depth=128)
    assert _records(raw, layout.sections["images"]) == [json.loads(b'{"id": 1, "x": ' + inner + b"}")]
    with pytest.raises(BadFileError, match="deeper than 127 levels"):
        scan_document(_blocks(raw, 7), source="ok.json", max_depth=127)


# ---------------------------------------------------------------------------- a top-level list (results files)


DETECTION = {"image_id": 7, "category_id": 2, "bbox": [1.5, 2, 10, 4], "score": 0.9, "note": "] } [ { \\\" ,"}


def _list(raw: bytes, block: int = 7, **kw):
    return scan_list(_blocks(raw, block), source="dets.json", **kw)


@settings(max_examples=60, deadline=None)
@given(records=json_records, block=st.integers(1, 300), chunk=st.integers(1, 500), indent=st.sampled_from([None, 1]))
def test_a_list_is_cut_into_chunks_of_whole_records_as_a_record_array_is(records, block, chunk, indent):
    raw = json.dumps(records, indent=indent).encode()
    section = _list(raw, block, chunk_bytes=chunk)
    assert _records(raw, section) == records and section.records == len(records)
    # the same chunk bounds as the same records in a document's array, shifted by the key
    doc = b'{"images": ' + raw + b"}"
    images = scan_document(_blocks(doc, block), source="h.json", chunk_bytes=chunk).sections["images"]
    shift = len(b'{"images": ')
    assert [(a - shift, b - shift) for a, b in images.chunks()] == section.chunks()
    assert images.first_index == section.first_index


def test_a_list_of_detections_with_brackets_in_strings():
    recs = [dict(DETECTION, score=i / 10) for i in range(9)]
    raw = json.dumps(recs, indent=1).encode()
    section = _list(raw, 5, chunk_bytes=64)
    assert section.records == 9 and len(section.chunks()) > 2
    assert _records(raw, section) == recs


@pytest.mark.parametrize("raw", [b" [ ] ", b"[]", b"[\n]\n"])
def test_an_empty_list_has_no_records(raw):
    section = _list(raw)
    assert section.records == 0 and all(not raw[a:b].strip() for a, b in section.chunks())


@pytest.mark.parametrize("raw, message", [
    (b'{"images": []}', r"the top level is an object \(a ground-truth file\?\); a results file is a JSON list "
                        r'of detections \[\{"image_id", "category_id", "score", \.\.\.\}, \.\.\.\]$'),
    (b'"text"', "the top level is not a JSON list; a results file is a JSON list of detections"),
    (b'[{"image_id": 1}', r"the file ends at byte 16 inside an unfinished value; it is truncated or not JSON$"),
    (b"[] []", r"unexpected data after the top-level list at byte 2$"),
    (b"[{}]\n\n\n\n\n\n\n\nx", r"unexpected data after the top-level list at byte 4$"),
    (b"[{}]]", r"unbalanced brackets at byte 4"),
    (b"", r"the file is empty; expected a JSON list of detections$"),
    (b" \n\t", r"the file is empty; expected a JSON list of detections$"),
])
def test_what_is_not_a_list_of_records_is_refused_naming_the_file(raw, message):
    with pytest.raises(BadFileError, match="^dets.json: " + message):
        _list(raw, 3)


def test_a_list_has_the_limits_of_a_record_array():
    with pytest.raises(BadFileError, match=r"results: a record starting near byte \d+ is larger than 0 MB"):
        _list(b"[" + b"0," * 5000 + b"0]", 1000, max_record_bytes=1000)
    with pytest.raises(BadFileError, match="results: a record is larger than 0 MB"):
        _list(b"[" + b"0," * 400 + b"0]", 1000, max_record_bytes=500)
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BadFileError, match=r"^dets.json: brackets nested deeper than 128 levels at byte \d+"):
        _list(b'[{"image_id": 1, "segmentation": ' + deep + b"}]", 4096)
    inner = b"[" * 126 + b"]" * 126  # + the list and the record: 128 levels
    assert _list(b'[{"x": ' + inner + b"}]").records == 1

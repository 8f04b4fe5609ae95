"""Polygons and bboxes read from the bytes (pipeline._jsonpoly through ``parse.parse_with_geometry``):
every value is ``float()`` of its literal, what is not the plain form stays for the Python
parser, and an ingest writes the same rows as without the extension."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import BadFileError, BadRecordError
from pipeline.ingest import flatten, parse, sources
from pipeline.ingest.records import ImageSizes
from pipeline.ingest.run import run_ingest
from pipeline.ingest.plan import IngestOptions, plan_file
from pipeline.jsontext import loads
from pipeline.warehouse import Warehouse

needs_ext = pytest.mark.skipif(not parse.AVAILABLE, reason="pipeline._jsonpoly is not built")


def test_extension_is_built_in_ci():
    if os.environ.get("CI") != "true":
        pytest.skip("only CI guarantees an installed build")
    assert parse.AVAILABLE, "pipeline._jsonpoly did not build; ingest fell back to Python floats"


def extract(text: bytes):
    """(records, Geometry or None) of a chunk's text."""
    return parse.parse_with_geometry(text, source="t.json", section="annotations", offset=0)


def bits(values) -> list[int]:
    """Each float64 as its bit pattern: -0.0 and 0.0 differ."""
    return np.asarray(values, np.float64).view(np.int64).tolist()


def expected(literal: str) -> float:
    """float() of a JSON number literal; an integer literal's zero is +0.0 (the int 0)."""
    v = float(literal)
    return 0.0 if v == 0 and not any(c in literal for c in ".eE") else v


# ---------------------------------------------------------------------------- values

DIGITS = st.text("0123456789", min_size=1, max_size=30)


@st.composite
def literals(draw) -> str:
    """JSON number literals: many digits, leading zeros after the point, exponents near the
    fast path's limits and far beyond the float range."""
    head = draw(st.sampled_from(["0", None]))
    if head is None:
        head = draw(st.sampled_from("123456789")) + draw(st.text("0123456789", max_size=25))
    text = draw(st.sampled_from(["", "-"])) + head
    if draw(st.booleans()):
        text += "." + draw(DIGITS)
    if draw(st.booleans()):
        exp = draw(st.one_of(st.integers(-30, 30), st.integers(-400, 400)))
        text += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "+"]) if exp >= 0 else st.just("")) + str(exp)
    return text


BOUNDARIES = [
    "0", "-0", "0.0", "-0.0", "0e5", "-0e-5", "12", "-12", "1", "9007199254740992", "9007199254740993",
    "9007199254740994", "9007199254740995", "-9007199254740993", "18446744073709551615", "18446744073709551616",
    "123456789012345678901234567890", "1e22", "1e23", "9.007199254740993e22", "8.98846567431158e307",
    "1.7976931348623157e308", "1.7976931348623158e308", "2.2250738585072011e-308", "2.2250738585072014e-308",
    "4.9406564584124654e-324", "2.4703282292062327e-324", "2.4703282292062328e-324", "1e-400", "-1e-400",
    "0.1", "0.30000000000000004", "1.00000000000000011102230246251565404236316680908203125",
    "1.000000000000000111022302462515654042363166809082031250001", "9007199254740993.0", "0.000001", "1e-22",
    "1e-23", "4503599627370497.5", "239.97", "426.91", "1.5e+3", "1E3", "3.0e-0", "100000000000000000000000",
]


def values_of(literals_: list[str]) -> list[float]:
    """What the extension gives for a polygon [[literals]]; None when it leaves the record."""
    _, found = extract(('{"segmentation":[[' + ",".join(literals_) + "]]}").encode())
    return None if found is None else found.coords.tolist()


@needs_ext
@pytest.mark.parametrize("literal", BOUNDARIES)
def test_a_boundary_literal_is_its_correctly_rounded_double(literal):
    got = values_of([literal])
    want = expected(literal)
    assert got is not None and bits(got) == bits([want]), (literal, got, want)


@needs_ext
@settings(max_examples=1500, deadline=None)
@given(st.lists(literals(), min_size=1, max_size=8))
def test_every_value_equals_float_of_its_literal_and_todays_path(lits):
    want = [expected(s) for s in lits]
    got = values_of(lits)
    if not all(np.isfinite(want)):  # beyond float64: the record stays for the Python parser
        assert got is None
        return
    assert got is not None and bits(got) == bits(want), (lits, got, want)
    # what the records path gives: the parsed numbers (int or float) through float64
    assert bits(got) == bits(np.array(loads("[" + ",".join(lits) + "]"), dtype=np.float64))


@needs_ext
@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**70), 2**70))
def test_integers_round_like_python(n):
    assert bits(values_of([str(n)])) == bits([float(n)])


# ---------------------------------------------------------------------------- shapes

NOT_PLAIN = [
    '"segmentation":[]', '"segmentation":[[]]', '"segmentation":[[1,2],[]]', '"segmentation":[1,2,3]',
    '"segmentation":[[1,"2"]]', '"segmentation":[[1,null]]', '"segmentation":[[1,true]]', '"segmentation":[[NaN,1]]',
    '"segmentation":[[Infinity]]', '"segmentation":[[-Infinity]]', '"segmentation":[[1e400]]',
    '"segmentation":[[-1e400, 2]]', '"segmentation":[[01]]', '"segmentation":[[+1]]', '"segmentation":[[.5]]',
    '"segmentation":[[1.]]', '"segmentation":[[1e]]', '"segmentation":[[1e+]]', '"segmentation":[[-]]',
    '"segmentation":[[0x10]]', '"segmentation":[[1,2],[[3]]]',
    '"segmentation":null', '"segmentation":"[[1,2]]"', '"segmentation":[[1,2]],"segmentation":[[3,4]]',
    '"segmentation":[[1,2]],"segment\\u0061tion":[[3,4]]', '"segment\\u0061tion":[[3,4]]',
    '"segmentation ":[[1,2]]', '"Segmentation":[[1,2]]', '"x":{"segmentation":[[1,2]]}',
    '"x":[{"segmentation":[[1,2]]}]', '"a":"\\"segmentation\\":[[1,2]]"', '"segmentation":[[1,2]],"k\\n":1',
    # uncompressed RLE whose runs are not all plain integers without a sign, or whose object
    # or record has a key written with an escape, or two counts
    '"segmentation":{"counts":[],"size":[1,1]}', '"segmentation":{"counts":[-1],"size":[1,1]}',
    '"segmentation":{"counts":[1.0],"size":[1,1]}', '"segmentation":{"counts":[1e2],"size":[1,1]}',
    '"segmentation":{"counts":[01],"size":[1,1]}', '"segmentation":{"counts":[1234567890123456789],"size":[1,1]}',
    '"segmentation":{"counts":[true],"size":[1,1]}', '"segmentation":{"counts":[[1]],"size":[1,1]}',
    '"segmentation":{"counts":[1,],"size":[1,1]}', '"segmentation":{"counts":[1,null],"size":[1,1]}',
    '"segmentation":{"counts":"1","size":[1,1]}', '"segmentation":{"size":[1,1]}', '"segmentation":{}',
    '"segmentation":{"counts":[1],"counts":[1]}', '"segmentation":{"c\\u006funts":[1],"size":[1,1]}',
    '"segmentation":{"counts":[1],"s\\u0069ze":[1,1]}', '"segmentation":{"counts":[1]},"k\\n":1',
    '"segmentation":{"counts":[1]},"segmentation":{"counts":[1]}', '"x":{"segmentation":{"counts":[1]}}',
    '"segmentation":{"x":{"counts":[1]}}', '"segmentation":{"counts":[+1]}', '"segmentation":{"counts":[0x1]}',
]


@needs_ext
@pytest.mark.parametrize("inner", NOT_PLAIN)
def test_what_is_not_the_plain_form_stays_for_the_python_parser(inner):
    text = ("[{" + inner + "}]").encode()
    assert parse._jsonpoly.extract(text[1:-1]) == (text, None)
    try:
        want = loads(text)
    except ValueError:  # not JSON: the parser's message, as without the extension
        with pytest.raises(BadFileError):
            extract(text[1:-1])
        return
    records, found = extract(text[1:-1])
    assert found is None and records == want


@needs_ext
@pytest.mark.parametrize("inner, read", [
    ('"bbox":[1,2.5,-0,4e1]', [1, 2.5, 0, 40]), ('"bbox" : [ -0.0 ,1,2, 3 ]', [-0.0, 1, 2, 3]),
    ('"bbox":[1,2,3]', None), ('"bbox":[1,2,3,4,5]', None), ('"bbox":[1,"2",3,4]', None), ('"bbox":[[1],2,3,4]', None),
    ('"bbox":[1,2,3,NaN]', None), ('"bbox":[1,2,3,1e999]', None), ('"bbox":null', None), ('"bbox":[]', None),
    ('"bbox":[1,2,3,4],"bbox":[1,2,3,4]', None), ('"bbox":[1,2,3,4],"b\\u0062ox":1', None),
    ('"x":{"bbox":[1,2,3,4]}', None),
])
def test_a_bbox_is_read_when_it_is_4_numbers(inner, read):
    text = ("[{" + inner + "}]").encode()
    got = parse._jsonpoly.extract(text[1:-1])
    if read is None:
        assert got == (text, None)
        return
    records, found = extract(text[1:-1])
    assert found.rows.tolist() == [] and found.box_rows.tolist() == [0] and bits(found.boxes[0]) == bits(read)
    assert records == [{"bbox": []}] and found.original() == loads(text)


@needs_ext
@pytest.mark.parametrize("inner, runs", [
    ('"segmentation":{"counts":[0,3,12],"size":[3,5]}', [0, 3, 12]),
    ('"segmentation" : { "size" : [1, 7] , "counts" : [ 7 ] }', [7]),
    ('"segmentation":{"counts":[999999999999999999,0],"size":[1,1]}', [999999999999999999, 0]),
    ('"segmentation":{"counts":[\n1,\t2\r],"x":{"counts":[5]},"size":[1,3]},"bbox":[0,0,1,1]', [1, 2]),
])
def test_the_runs_of_uncompressed_rle_are_read_as_int64(inner, runs):
    text = ("[{" + inner + "}]").encode()
    records, found = extract(text[1:-1])
    want = loads(text)
    assert found.rows.tolist() == [] and found.rle_rows.tolist() == [0] and found.run_offsets.tolist() == [0, len(runs)]
    assert found.runs.dtype == np.int64 and found.runs.tolist() == runs
    assert [v.tolist() for v in found.rle_runs().values()] == [runs]
    blank = {"bbox": []} if found.box_rows.tolist() == [0] else {}
    assert records == [{**want[0], "segmentation": {**want[0]["segmentation"], "counts": []}, **blank}]
    assert found.original() == want


@needs_ext
@pytest.mark.parametrize("text, rows, coords", [
    # strings with brackets, quotes and escapes do not confuse the walk
    ('{"a":"\\\\","segmentation":[[1,2]]}', [0], [1, 2]),
    ('{"a":"}]\\"{[","segmentation":[[1,2]]}, {"segmentation":[[3]]}', [0, 1], [1, 2, 3]),
    ('[{"segmentation":[[9]]}], {"b":{"segmentation":[[8]]},"segmentation":[[7]]}', [1], [7]),
    ('"segmentation", {"segmentation":[[6]]}, 5, null, {"segmentation":[[5, 4]]}', [1, 4], [6, 5, 4]),
    (' {\t"segmentation" :\n[ [ 1 , 2 ] ,\r[3] ] } ', [0], [1, 2, 3]),
    ('{"é":"ü","segmentation":[[1,2]]}', [0], [1, 2]),
])
def test_records_with_the_plain_form_are_read_wherever_they_are(text, rows, coords):
    text = text.encode()
    want = loads(b"[" + text + b"]")
    records, found = extract(text)
    assert found is not None and found.rows.tolist() == rows and found.coords.tolist() == coords
    for i, (rec, orig) in enumerate(zip(records, want)):
        if i in rows:
            assert rec == {**orig, "segmentation": []}
        else:
            assert rec == orig
    assert found.original() == want


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(
        st.sampled_from(["segmentation", "bbox", "a", "seg\"mentation", "x", "counts", "size"]) | st.text(max_size=6),
        inner, max_size=4)), max_leaves=12)
numbers = st.one_of(st.integers(-(2**60), 2**60), st.floats(allow_nan=False, allow_infinity=False))
polygons = st.lists(st.lists(st.one_of(st.integers(-(2**60), 2**60), st.floats(allow_nan=False, allow_infinity=False)),
                             min_size=1, max_size=6), min_size=1, max_size=3)
runs_st = st.lists(st.one_of(st.integers(0, 10**18), st.integers(-5, 2**64), st.sampled_from([True, 1.0, None])),
                   max_size=6)
rle_objects = st.tuples(st.dictionaries(st.sampled_from(["size", "x", "cöunts"]) | st.text(max_size=6), json_values,
                                        max_size=2), runs_st).map(lambda t: {**t[0], "counts": t[1]})
records_st = st.lists(st.one_of(json_values, st.tuples(
    st.dictionaries(st.text(max_size=6), json_values, max_size=3), polygons | rle_objects,
    st.lists(numbers, min_size=3, max_size=5),
).map(lambda t: {**t[0], "segmentation": t[1], "bbox": t[2]})), min_size=1, max_size=6)


@needs_ext
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records_st, st.booleans(), st.sampled_from([None, 1, 2]), st.sampled_from(["", ",", "\n , ", " "]),
       st.sampled_from(["", "\n", " \t"]))
def test_records_with_their_polygons_put_back_are_the_records_as_written(recs, ascii_only, indent, before, after):
    text = ",".join(json.dumps(r, ensure_ascii=ascii_only, indent=indent) for r in recs).encode()
    want = loads(b"[" + text + b"]")
    records, found = extract(before.encode() + text + after.encode())
    rows = [] if found is None else found.rows.tolist()
    def unescaped(r) -> bool:
        return type(r) is dict and not any("\\" in json.dumps(k, ensure_ascii=ascii_only) for k in r)

    def plain(r) -> bool:  # what the extension reads: keys without escapes, [[number, ...], ...]
        seg = r.get("segmentation") if unescaped(r) else None
        return type(seg) is list and bool(seg) and all(type(p) is list and p and all(
            type(x) in (int, float) for x in p) for p in seg)

    def box(r) -> bool:
        b = r.get("bbox") if unescaped(r) else None
        return type(b) is list and len(b) == 4 and all(type(x) in (int, float) for x in b)

    def runs(r) -> bool:  # uncompressed RLE without escaped keys, its runs integers in [0, 10**18)
        seg = r.get("segmentation") if unescaped(r) else None
        c = seg.get("counts") if type(seg) is dict and unescaped(seg) else None
        return type(c) is list and bool(c) and all(type(x) is int and 0 <= x < 10**18 for x in c)

    assert rows == [i for i, r in enumerate(want) if plain(r)]
    rle_rows = [] if found is None else found.rle_rows.tolist()
    assert rle_rows == [i for i, r in enumerate(want) if runs(r)]
    for i, got_runs in ({} if found is None else found.rle_runs()).items():
        assert got_runs.tolist() == want[i]["segmentation"]["counts"]
    box_rows = [] if found is None else found.box_rows.tolist()
    assert box_rows == [i for i, r in enumerate(want) if box(r)]
    for k, i in enumerate(box_rows):
        assert bits(found.boxes[k]) == bits(np.array(want[i]["bbox"], np.float64))
    for k, i in enumerate(rows):
        a, b = found.ann_parts[k], found.ann_parts[k + 1]
        parts = [found.coords[found.part_offsets[j]:found.part_offsets[j + 1]] for j in range(a, b)]
        seg = want[i]["segmentation"]
        assert [bits(p) for p in parts] == [bits(np.array(p, np.float64)) for p in seg]
    for i, (rec, orig) in enumerate(zip(records, want)):
        blanked = {key: [] for key, read in (("segmentation", i in rows), ("bbox", i in box_rows)) if read}
        if i in rle_rows:
            blanked["segmentation"] = {**orig["segmentation"], "counts": []}
        assert rec == ({**orig, **blanked} if blanked else orig)


@needs_ext
@pytest.mark.parametrize("chunk", [b"", b" \n", b" , ", b",\t\r\n"])
def test_a_chunk_without_records_has_none(chunk):
    assert parse._jsonpoly.extract(chunk) is None
    assert extract(chunk) == ([], None) and parse.parse_chunk(chunk, source="t", section="s", offset=0) == []


@needs_ext
@pytest.mark.parametrize("text", [
    b'{"segmentation":[[1,2]]}, {"a":tru}', b'{"segmentation":[[1,2]]}, {"a":"\xff"}',
    b'{"segmentation":[[1,2]]} {"segmentation":[[3]]}', b'{"segmentation":[[1,2]]}, {"a":1',
])
def test_bad_json_gets_the_message_of_the_text_as_written(text):
    with pytest.raises(BadFileError) as want:
        parse.parse_chunk(text, source="t.json", section="annotations", offset=100)
    with pytest.raises(BadFileError) as got:
        parse.parse_with_geometry(text, source="t.json", section="annotations", offset=100)
    assert str(got.value) == str(want.value)


# ---------------------------------------------------------------------------- ingest

FILES = ("instances_train2017.json", "instances_val2017.json",
         "person_keypoints_train2017.json", "person_keypoints_val2017.json")


def _chunks(coco_mini, name, tmp_path):
    sf = sources.resolve([str(coco_mini / "annotations" / name)], cache_dir=str(tmp_path))[0]
    plan = plan_file(sf, IngestOptions(chunk_bytes=64 << 10))
    sizes = ImageSizes.merge([flatten.flatten_images(parse.parse_chunk(
        sources.read_range(sf, a, b), source=sf.name, section="images", offset=a), plan.context, first).image_sizes
        for a, b, first in plan.chunks["images"]], plan.context.id_types.image)
    return plan, sizes, [(sources.read_range(sf, a, b), a, first) for a, b, first in plan.chunks["annotations"]]


def assert_same_tables(got: dict, want: dict, where):
    assert sorted(got) == sorted(want)
    for name in want:
        g, w = got[name], want[name]
        assert g.schema == w.schema, (where, name)
        assert g.num_rows == w.num_rows, (where, name)
        for column in w.column_names:  # column by column, so a failure names the column
            assert g.column(column).to_pylist() == w.column(column).to_pylist(), (where, name, column)
        if "polygons" in w.column_names:  # bit for bit (to_pylist has -0.0 == 0.0)
            flat = [pa.concat_arrays(t.column("polygons").chunks).flatten().flatten() for t in (g, w)]
            assert bits(flat[0].to_numpy(zero_copy_only=False)) == bits(flat[1].to_numpy(zero_copy_only=False))


@needs_ext
@pytest.mark.parametrize("name", FILES)
def test_flattened_chunks_equal_those_of_the_records_path(coco_mini, tmp_path, name):
    plan, sizes, chunks = _chunks(coco_mini, name, tmp_path)
    assert len(chunks) >= 2
    crowd = 0
    for buf, offset, first in chunks:
        records, found = extract(buf)
        assert found is not None and len(found.rows) > 0
        crowd += len(found.rle_rows)
        got = flatten.flatten_annotations(records, plan.context, sizes, first, found)
        want = flatten.flatten_annotations(parse.parse_chunk(buf, source="t", section="annotations", offset=offset),
                                           plan.context, sizes, first)
        assert got.rejects == want.rejects == []
        assert_same_tables(got.tables, want.tables, (name, first))
    assert crowd > 0  # the crowd regions' runs were read from the bytes too


@needs_ext
def test_a_chunk_mixing_read_and_listed_polygons_gives_the_same_rows(coco_mini, tmp_path):
    plan, sizes, chunks = _chunks(coco_mini, "instances_val2017.json", tmp_path)
    buf, offset, first = chunks[0]
    # every third record's key written with an escape: the extension leaves those records
    # (their polygons come as lists) and reads the others
    n = buf.count(b'"segmentation"')
    pieces = buf.split(b'"segmentation"')
    mixed = pieces[0] + b"".join((b'"segment\\u0061tion"' if k % 3 == 0 else b'"segmentation"') + p
                                 for k, p in enumerate(pieces[1:]))
    records, found = extract(mixed)
    assert found is not None and 0 < len(found.rows) < n
    got = flatten.flatten_instances_fast(records, plan.context, sizes, first, found)
    assert got is not None
    want = flatten.flatten_annotations(parse.parse_chunk(buf, source="t", section="annotations", offset=offset),
                                       plan.context, sizes, first)
    assert_same_tables(got.tables, want.tables, first)


@needs_ext
def test_an_unusual_chunk_goes_to_the_exact_path_with_its_records_as_written(coco_mini, tmp_path):
    plan, sizes, chunks = _chunks(coco_mini, "instances_val2017.json", tmp_path)
    buf, offset, first = chunks[0]
    bad = buf.replace(b'"area":', b'"area":"x","was":', 1)
    bad_records = loads(b"[" + bad.strip(b" \n,") + b"]")
    records, found = extract(bad)
    assert found is not None
    ctx = plan.context
    with pytest.raises(BadRecordError, match=f"annotation id={bad_records[0]['id']}: area 'x' is not a finite"):
        flatten.flatten_annotations(records, ctx, sizes, first, found)
    skip = dataclasses.replace(ctx, on_bad_record="skip")
    got = flatten.flatten_annotations(records, skip, sizes, first, found)
    want = flatten.flatten_annotations(bad_records, skip, sizes, first)
    assert got.rejects == want.rejects and len(want.rejects) == 1
    assert_same_tables(got.tables, want.tables, first)


@needs_ext
def test_an_ingest_writes_the_rows_it_writes_without_the_extension(coco_mini, tmp_path, monkeypatch):
    tables = {}
    for built in (True, False):
        monkeypatch.setattr(parse, "AVAILABLE", built)
        root = tmp_path / str(built)
        run_ingest([str(coco_mini / "annotations" / name) for name in FILES], warehouse=str(root), dataset="d",
                   workers=1, chunk_bytes=128 << 10)
        wh = Warehouse(str(root), "d")
        tables[built] = {(t, s): wh.read_table(t, s) for t in ("annotations", "keypoints")
                         for s in ("train2017", "val2017")}
    assert_same_tables(tables[True], tables[False], "ingest")

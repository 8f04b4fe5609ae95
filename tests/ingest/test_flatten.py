"""flatten: the fast and the exact instances paths give the same rows; odd values are bad records."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.errors import BadRecordError
from pipeline.ingest import flatten, parse, sources
from pipeline.ingest.records import ImageSizes
from pipeline.ingest.plan import IngestOptions, plan_file

FILES = ("instances_train2017.json", "instances_val2017.json",
         "person_keypoints_train2017.json", "person_keypoints_val2017.json")


def _plan(coco_mini, name, tmp_path):
    sf = sources.resolve([str(coco_mini / "annotations" / name)], cache_dir=str(tmp_path))[0]
    return plan_file(sf, IngestOptions(chunk_bytes=64 << 10))  # small chunks: several per file


def _records(plan, section):
    for start, end, first in plan.chunks.get(section, []):
        buf = sources.read_range(plan.source, start, end)
        yield parse.parse_chunk(buf, source=plan.source.name, section=section, offset=start), first


def _sizes(plan) -> ImageSizes:
    parts = [flatten.flatten_images(recs, plan.context, first).image_sizes for recs, first in _records(plan, "images")]
    return ImageSizes.merge(parts, plan.context.id_types.image)


@pytest.mark.parametrize("name", FILES)
def test_fast_and_exact_paths_give_equal_rows_on_every_chunk(coco_mini, tmp_path, name):
    plan = _plan(coco_mini, name, tmp_path)
    ctx, sizes = plan.context, _sizes(plan)
    chunks = list(_records(plan, "annotations"))
    assert len(chunks) >= 2
    for records, first in chunks:
        fast = flatten.flatten_instances_fast(records, ctx, sizes, first)
        assert fast is not None, f"{name}: the fast path handed chunk at record {first} to the exact path"
        exact = flatten.flatten_instances_exact(records, ctx, sizes, first)
        assert fast.rejects == exact.rejects == []
        assert sorted(fast.tables) == sorted(exact.tables) == sorted(
            ["annotations", "keypoints"] if ctx.kind == "person_keypoints" else ["annotations"])
        for table in fast.tables:
            f, e = fast.tables[table], exact.tables[table]
            assert f.num_rows == e.num_rows > 0
            assert f.schema == e.schema
            for column in f.column_names:  # column by column, so a failure names the column
                assert f.column(column).to_pylist() == e.column(column).to_pylist(), (name, first, table, column)


def test_an_unusual_chunk_takes_the_exact_path_which_names_the_record(coco_mini, tmp_path):
    plan = _plan(coco_mini, "instances_val2017.json", tmp_path)
    ctx, sizes = plan.context, _sizes(plan)
    records, first = next(_records(plan, "annotations"))
    records[3]["area"] = "12"
    assert flatten.flatten_instances_fast(records, ctx, sizes, first) is None
    with pytest.raises(BadRecordError, match=f"annotation id={records[3]['id']}: area '12' is not a finite number"):
        flatten.flatten_annotations(records, ctx, sizes, first)
    skipped = flatten.flatten_annotations(records, dataclasses.replace(ctx, on_bad_record="skip"), sizes, first)
    assert [r["record_index"] for r in skipped.rejects] == [first + 3]
    assert skipped.tables["annotations"].num_rows == len(records) - 1


@pytest.mark.parametrize("field, value, problem", [
    ("area", 10 ** 400, "area 1000"),  # beyond float64: a bad record, not an OverflowError
    ("bbox", [0, 0, 10 ** 400, 1], "is not 4 finite numbers"),
    ("segmentation", [[0, 0, 10 ** 400, 0, 5, 5]], "polygon has a coordinate beyond the range of a 64-bit float"),
])
def test_integers_beyond_float_range_are_bad_records(coco_mini, tmp_path, field, value, problem):
    plan = _plan(coco_mini, "instances_val2017.json", tmp_path)
    ctx, sizes = plan.context, _sizes(plan)
    records, first = next(_records(plan, "annotations"))
    records[0][field] = value
    with pytest.raises(BadRecordError, match=problem):
        flatten.flatten_annotations(records, ctx, sizes, first)


@pytest.mark.parametrize("name", FILES + ("captions_val2017.json",))
def test_image_rows_checked_by_column_equal_those_checked_one_by_one(coco_mini, tmp_path, name, monkeypatch):
    plan = _plan(coco_mini, name, tmp_path)
    chunks = list(_records(plan, "images"))
    assert all(flatten._images_fast(records, plan.context) is not None for records, _ in chunks)
    fast = [flatten.flatten_images(records, plan.context, first) for records, first in chunks]
    monkeypatch.setattr(flatten, "_images_fast", lambda records, ctx: None)
    slow = [flatten.flatten_images(records, plan.context, first) for records, first in chunks]
    for f, s in zip(fast, slow):
        assert f.rejects == s.rejects == []
        assert f.tables["images"].equals(s.tables["images"]) and f.tables["images"].num_rows > 0
        assert f.image_sizes.lookup(s.tables["images"].column("id").to_pylist())[1].tolist() == (
            s.image_sizes.lookup(s.tables["images"].column("id").to_pylist())[1].tolist())


@pytest.mark.parametrize("change", [
    {"height": "480"}, {"height": 0}, {"width": -1}, {"height": 2**63}, {"id": "7"}, {"id": True}, {"license": None},
    {"file_name": "a\x00b"}, {"coco_url": 5}, {"flickr_url": None}, {"date_captured": 0}, {"other": 1}, {"id": 2**63},
    {"file_name": ...},  # missing
])
def test_an_unusual_image_goes_one_by_one(coco_mini, tmp_path, change):
    plan = _plan(coco_mini, "instances_val2017.json", tmp_path)
    records, first = next(_records(plan, "images"))
    assert flatten._images_fast(records, plan.context) is not None
    records[1].update(change)
    for key in [k for k, v in change.items() if v is ...]:
        del records[1][key]
    assert flatten._images_fast(records, plan.context) is None

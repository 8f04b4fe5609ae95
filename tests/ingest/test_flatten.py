"""flatten: the fast and the exact instances paths give the same rows (the mask columns
those of pycocotools, whatever mix of segmentations a chunk holds); odd values are bad records."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import numpy as np
import pyarrow.compute as pc
import pytest
from pycocotools import mask as cmask
from pycocotools.coco import COCO

from pipeline.errors import BadRecordError
from pipeline.ingest import flatten, parse, sources
from pipeline.ingest.records import ImageSizes
from pipeline.ingest.plan import IngestOptions, plan_file
from pipeline.schema import schema_for

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


MASK_COLUMNS = ("rle_counts", "rle_size", "mask_area", "polygons", "segmentation_format")


def _oracle_masks(coco, table) -> dict:
    """The mask columns pycocotools gives for the annotations of ``table``'s rows."""
    anns = [coco.anns[i] for i in table.column("id").to_pylist()]
    rles = [coco.annToRLE(a) if a.get("segmentation") else None for a in anns]
    return {"rle_counts": [r["counts"].decode() if r else None for r in rles],
            "rle_size": [list(r["size"]) if r else None for r in rles],
            "mask_area": [int(cmask.area(r)) if r else None for r in rles]}


@pytest.mark.parametrize("name", FILES)
def test_mask_columns_read_with_geometry_equal_the_exact_paths_and_pycocotools(coco_mini, tmp_path, name):
    plan = _plan(coco_mini, name, tmp_path)
    ctx, sizes = plan.context, _sizes(plan)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_mini / "annotations" / name))
    crowd = 0
    for start, end, first in plan.chunks["annotations"]:
        buf = sources.read_range(plan.source, start, end)
        records, geometry = parse.parse_with_geometry(buf, source=plan.source.name, section="annotations", offset=start)
        assert geometry is not None or not parse.AVAILABLE  # the polygons come in as flat arrays
        fast = flatten.flatten_instances_fast(records, ctx, sizes, first, geometry)
        assert fast is not None, (name, first)
        exact = flatten.flatten_instances_exact(records if geometry is None else geometry.original(), ctx, sizes, first)
        f, e = fast.tables["annotations"], exact.tables["annotations"]
        assert f.schema == e.schema
        for column in MASK_COLUMNS:
            assert f.column(column).type == f.schema.field(column).type
            assert f.column(column).equals(e.column(column)), (name, first, column)
        for column, want in _oracle_masks(coco, f).items():
            assert f.column(column).to_pylist() == want, (name, first, column)
        crowd += f.filter(pc.equal(f.column("segmentation_format"), "uncompressed_rle")).num_rows
    assert crowd > 0, "coco-mini has crowd (uncompressed RLE) annotations"


def _oracle_rle(seg, h: int, w: int) -> dict:
    """pycocotools' RLE of a segmentation, as ``COCO.annToRLE`` makes it."""
    if type(seg) is list:
        return cmask.merge(cmask.frPyObjects(seg, h, w))
    if type(seg["counts"]) is list:
        return cmask.frPyObjects(seg, h, w)
    return {"counts": seg["counts"].encode(), "size": seg["size"]}


def _mixed_records(coco_mini, bad: bool) -> list:
    """coco-mini val2017's annotations, their segmentations turned in turn into polygons,
    compressed RLE, uncompressed RLE, [], missing and null (and with ``bad``, bad masks)."""
    doc = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    images = {i["id"]: i for i in doc["images"]}
    out = []
    for k, rec in enumerate(doc["annotations"][:240]):
        im = images[rec["image_id"]]
        h, w = im["height"], im["width"]
        seg = rec["segmentation"]
        rle = _oracle_rle(seg, h, w)
        kind = k % 8
        if kind == 1:
            rec["segmentation"] = {"counts": rle["counts"].decode(), "size": [h, w]}
        elif kind == 2:
            pixels = cmask.decode(rle).ravel(order="F")
            edges = np.flatnonzero(np.diff(pixels)) + 1
            runs = np.diff(np.concatenate(([0], edges, [len(pixels)]))).tolist()
            rec["segmentation"] = {"counts": ([0] if pixels[0] else []) + runs, "size": [h, w]}
        elif kind == 3:
            rec["segmentation"] = []
        elif kind == 4:
            del rec["segmentation"]
        elif kind == 5:
            rec["segmentation"] = None
        elif kind == 6 and bad:
            rec["segmentation"] = [[1, 2, 3, 4, 5]] if k % 16 < 8 else {"counts": "0o", "size": [h, w]}
        elif kind == 7 and bad:
            rec["segmentation"] = {"counts": [1, 2, 3], "size": [h, w]}
        out.append(rec)
    return out


def _check_against_pycocotools(table, records):
    by_index = {i: r for i, r in enumerate(records)}
    kept = [by_index[i] for i in table.column("record_index").to_pylist()]
    want_fmt = []
    for rec, counts, size, area in zip(kept, *(table.column(c).to_pylist() for c in MASK_COLUMNS[:3]), strict=True):
        seg = rec.get("segmentation")
        if not seg:
            assert counts is size is area is None
            want_fmt.append("none")
            continue
        h, w = size
        rle = _oracle_rle(seg, h, w)
        assert (counts, area) == (rle["counts"].decode(), int(cmask.area(rle)))
        want_fmt.append("polygon" if type(seg) is list else "rle" if type(seg["counts"]) is str else "uncompressed_rle")
    assert table.column("segmentation_format").to_pylist() == want_fmt


def test_a_chunk_mixing_every_kind_of_segmentation_gives_the_exact_paths_mask_columns(coco_mini, tmp_path):
    plan = _plan(coco_mini, "instances_val2017.json", tmp_path)
    ctx, sizes = plan.context, _sizes(plan)
    records = _mixed_records(coco_mini, bad=False)
    fast = flatten.flatten_instances_fast(records, ctx, sizes, 0)
    assert fast is not None
    exact = flatten.flatten_instances_exact(records, ctx, sizes, 0)
    f, e = fast.tables["annotations"], exact.tables["annotations"]
    assert f.equals(e) and f.num_rows == len(records)
    assert set(f.column("segmentation_format").to_pylist()) == {"polygon", "rle", "uncompressed_rle", "none"}
    _check_against_pycocotools(f, records)


def test_bad_masks_in_a_mixed_chunk_are_rejected_and_the_rest_keep_their_masks(coco_mini, tmp_path):
    plan = _plan(coco_mini, "instances_val2017.json", tmp_path)
    ctx, sizes = plan.context, _sizes(plan)
    records = _mixed_records(coco_mini, bad=True)
    assert flatten.flatten_instances_fast(records, ctx, sizes, 0) is None
    flat = flatten.flatten_annotations(records, dataclasses.replace(ctx, on_bad_record="skip"), sizes, 0)
    rejected = [r["record_index"] for r in flat.rejects]
    assert rejected == [k for k in range(len(records)) if k % 8 in (6, 7)]
    table = flat.tables["annotations"]
    assert table.num_rows == len(records) - len(rejected)
    assert table.schema == schema_for("annotations", ctx.id_types)
    _check_against_pycocotools(table, records)
    problems = {r["reason"] for r in flat.rejects}
    assert any("polygon has 5 coordinates" in p for p in problems)
    assert any("RLE counts sum to 6" in p for p in problems)

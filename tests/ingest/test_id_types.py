"""Ids typed per id space: coco-mini converted to string image ids ("000000000139") with
integer category ids, and with string annotation ids too. Ingest, views, the COCO export
(pycocotools reads it), results and evaluate (COCOeval is the oracle) keep each id as given;
a dataset keeps one type per space across its files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as cm
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.evaluate import metrics as ev, store
from pipeline import id_types
from pipeline.errors import BadFileError, BadRecordError
from pipeline.export import export
from pipeline.evaluate.detections import run_ingest_results
from pipeline.ingest.run import run_ingest
from pipeline.schema import IdTypes
from pipeline.query.views import connect
from pipeline.warehouse import Warehouse
from tests.evaluate.test_metrics import make_results

VAL = "instances_val2017.json"
# (name, annotation id as written) of the two conversions
VARIANTS = {"string-images": lambda i: i, "string-images-and-annotations": lambda i: f"{i:09d}"}


def image_id(i: int) -> str:
    return f"{i:012d}"


def convert(doc: dict, ann_id) -> dict:
    """``doc`` with zero-padded string image ids; annotation ids through ``ann_id``."""
    out = dict(doc)
    out["images"] = [{**im, "id": image_id(im["id"])} for im in doc["images"]]
    out["annotations"] = [{**a, "id": ann_id(a["id"]), "image_id": image_id(a["image_id"])}
                          for a in doc["annotations"]]
    return out


@pytest.fixture(scope="module")
def original(coco_mini) -> dict:
    return json.loads((coco_mini / "annotations" / VAL).read_text())


@pytest.fixture(scope="module", params=list(VARIANTS))
def converted(request, original, tmp_path_factory):
    """(variant, source path, source document, warehouse, dataset) of one conversion, ingested."""
    root = tmp_path_factory.mktemp(request.param)
    doc = convert(original, VARIANTS[request.param])
    src = root / "src" / VAL
    src.parent.mkdir()
    src.write_text(json.dumps(doc))
    run_ingest([str(src)], warehouse=str(root / "wh"), dataset="d", workers=1)
    return request.param, src, doc, str(root / "wh"), "d"


def _cocolake(*args, cwd) -> subprocess.CompletedProcess:
    exe = pathlib.Path(sys.executable).with_name("cocolake")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------- deciding


def test_each_space_takes_the_type_of_its_first_id():
    types, origins = id_types.decide({"id": "000000000139"}, {"id": 5, "image_id": "000000000139", "category_id": 1},
                                     {"id": 1})
    assert types == IdTypes(image="string", annotation="int64", category="int64")
    assert origins == {"image": "the first image's id is '000000000139'", "annotation": "the first annotation's id is 5",
                       "category": "the first category's id is 1"}
    # no image, no category record: the first annotation's image_id and category_id decide
    types, origins = id_types.decide(None, {"id": "a1", "image_id": "x", "category_id": "c"}, None)
    assert types == IdTypes("string", "string", "string") and set(origins) == {"image", "annotation", "category"}
    assert id_types.decide(None, None, None) == (IdTypes(), {})


def test_text_form_round_trips():
    for t in (IdTypes(), IdTypes("string", "string", "string"), IdTypes("string", "int64", "int64"),
              IdTypes("int64", "string", "int64")):
        assert IdTypes.parse(t.text()) == t
    assert IdTypes("string", "int64", "int64").text() == "image=string,annotation=int64,category=int64"
    assert IdTypes.parse("string") == IdTypes("string", "string", "string")  # what older manifests say
    with pytest.raises(ValueError, match="unknown id type"):
        IdTypes.parse("image=uuid,annotation=int64,category=int64")


# ---------------------------------------------------------------------------- ingest and views


def test_ids_are_stored_as_given(converted, original):
    variant, _, doc, wh, ds = converted
    w = Warehouse(wh, ds)
    m = w.require_manifest()
    string_anns = variant == "string-images-and-annotations"
    want = IdTypes("string", "string" if string_anns else "int64", "int64")
    assert m.id_types() == want
    assert [s["id_type"] for s in m.sources] == [want.text()]
    images = sorted(w.read_table("images").to_pylist(), key=lambda r: r["record_index"])
    assert [r["id"] for r in images] == [im["id"] for im in doc["images"]]
    assert images[0]["id"] == image_id(original["images"][0]["id"]) and isinstance(images[0]["id"], str)
    anns = sorted(w.read_table("annotations").to_pylist(), key=lambda r: r["record_index"])
    assert [(a["id"], a["image_id"], a["category_id"]) for a in anns] == [
        (a["id"], a["image_id"], a["category_id"]) for a in doc["annotations"]]
    assert {type(a["category_id"]) for a in anns} == {int}
    assert {type(a["id"]) for a in anns} == {str if string_anns else int}


def test_views_join_on_string_ids(converted):
    _, _, doc, wh, ds = converted
    con = connect(wh, ds)
    try:
        images = {im["id"]: im for im in doc["images"]}
        cats = {c["id"]: c["name"] for c in doc["categories"]}
        rows = con.execute("SELECT id, image_id, height, width, category_name FROM annotations_enriched").fetchall()
        assert len(rows) == len(doc["annotations"])
        by_id = {r[0]: r[1:] for r in rows}
        for a in doc["annotations"]:
            im = images[a["image_id"]]
            assert by_id[a["id"]] == (a["image_id"], im["height"], im["width"], cats[a["category_id"]])
        per_image = dict(con.execute("SELECT image_id, annotations FROM image_stats").fetchall())
        assert set(per_image) == set(images)
        for iid in images:
            assert per_image[iid] == sum(1 for a in doc["annotations"] if a["image_id"] == iid)
        per_cat = dict(con.execute("SELECT category_id, annotations FROM category_stats").fetchall())
        assert sum(per_cat.values()) == len(doc["annotations"])
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(doc["images"])
    finally:
        con.close()


# ---------------------------------------------------------------------------- export


def test_coco_export_gives_back_every_record_with_its_id_types(converted, original, tmp_path):
    _, _, doc, wh, ds = converted
    export(tmp_path, warehouse=wh, dataset=ds, images="none")
    path = tmp_path / "annotations" / VAL
    exported = json.loads(path.read_text())
    for key in ("images", "annotations", "categories"):
        assert len(exported[key]) == len(doc[key]), key
        for got, want in zip(exported[key], doc[key]):
            assert got == want, key
            ids = [k for k in ("id", "image_id", "category_id") if k in want]
            assert [type(got[k]) for k in ids] == [type(want[k]) for k in ids], key
    assert exported["images"][0]["id"] == image_id(original["images"][0]["id"])
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    first = doc["images"][0]["id"]
    assert coco.getAnnIds(imgIds=[first]) == [a["id"] for a in doc["annotations"] if a["image_id"] == first]
    assert coco.getAnnIds(imgIds=[int(first)]) == []  # "000000000139" did not become 139


# ---------------------------------------------------------------------------- results and evaluate


def _cocoeval(gt_path, results: list, iou_type: str) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        e = COCOeval(gt, gt.loadRes(results), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


@pytest.mark.parametrize("iou_type, seed", [("bbox", 11), ("segm", 12)])
def test_evaluate_string_ids_equals_cocoeval(converted, original, coco_mini, tmp_path, iou_type, seed):
    _, src, doc, wh, ds = converted
    int_results = make_results(original, iou_type, seed, False)
    results = [{**d, "image_id": image_id(d["image_id"])} for d in int_results]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(results))
    run = f"run-{iou_type}"
    run_ingest_results(str(path), run=run, warehouse=wh, dataset=ds)
    con = connect(wh, ds)
    try:
        got = ev.evaluate(con, run, iou_type=iou_type)
        types = {t for (t,) in con.execute(f"SELECT DISTINCT typeof(image_id) FROM predictions WHERE run = '{run}'")
                 .fetchall()}
    finally:
        con.close()
    assert types == {"VARCHAR"}
    oracle = _cocoeval(src, results, iou_type)  # COCOeval runs on string image ids as well
    np.testing.assert_allclose(got.stats, oracle.stats, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.precision, oracle.eval["precision"], atol=1e-4, rtol=0)
    assert got.img_ids.tolist() == list(oracle.params.imgIds)
    # and the same numbers as the integer-id original
    plain = _cocoeval(coco_mini / "annotations" / VAL, int_results, iou_type)
    np.testing.assert_allclose(got.stats, plain.stats, atol=1e-4, rtol=0)
    assert got.stats[0] > 0.05


def test_save_matches_keeps_string_ids(converted, original, tmp_path):
    _, _, doc, wh, ds = converted
    results = [{**d, "image_id": image_id(d["image_id"])} for d in make_results(original, "bbox", 13, True)]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(results))
    run_ingest_results(str(path), run="matches", warehouse=wh, dataset=ds)
    con = connect(wh, ds)
    try:
        store.save_matches(wh, ds, ev.evaluate(con, "matches", iou_type="bbox"))
    finally:
        con.close()
    con = connect(wh, ds)
    try:
        rows = con.execute("SELECT image_id, gt_id, category_id FROM prediction_matches "
                           "WHERE run = 'matches' AND outcome = 'tp' AND iou_threshold = 0.5").fetchall()
    finally:
        con.close()
    anns = {a["id"]: a for a in doc["annotations"]}
    assert rows
    for iid, gt_id, cid in rows:
        assert isinstance(iid, str) and (anns[gt_id]["image_id"], anns[gt_id]["category_id"]) == (iid, cid)


def test_detection_with_an_integer_image_id_on_string_ids_is_a_bad_record(converted, tmp_path):
    _, _, doc, wh, ds = converted
    first = doc["images"][0]["id"]
    dets = [{"image_id": first, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5},
            {"image_id": int(first), "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.4}]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    with pytest.raises(BadRecordError, match=rf"dets\.json: detection #1: image_id {int(first)} is an integer but this "
                       r"file's image ids are strings \(mixed image id types; the ground truth's image ids are strings\)"):
        run_ingest_results(str(path), run="bad", warehouse=wh, dataset=ds)
    report = run_ingest_results(str(path), run="bad", warehouse=wh, dataset=ds, on_bad_record="skip")
    assert (report.detections, report.rejects) == (1, 1)


def test_a_list_as_image_id_among_string_ids_is_a_bad_record(tmp_path):
    doc = {"images": [{"id": "a", "file_name": "a.jpg", "height": 5, "width": 5}],
           "annotations": [{"id": 1, "image_id": "a", "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1,
                            "iscrowd": 0},
                           {"id": 2, "image_id": ["a"], "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1,
                            "iscrowd": 0}],
           "categories": [{"id": 1, "name": "c"}]}
    src = tmp_path / VAL
    src.write_text(json.dumps(doc))
    with pytest.raises(BadRecordError, match=r"annotation id=2: image_id \['a'\] is not a string id"):
        run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)
    report = run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1, on_bad_record="skip")
    assert report.rejects == 1


def test_results_find_their_split_by_string_image_ids(original, coco_mini, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / VAL).write_text(json.dumps(convert(original, lambda i: i)))
    train = json.loads((coco_mini / "annotations" / "instances_train2017.json").read_text())
    (src / "instances_train2017.json").write_text(json.dumps(convert(train, lambda i: i)))
    wh = str(tmp_path / "wh")
    run_ingest([str(src)], warehouse=wh, dataset="d", workers=1)
    dets = [{"image_id": int(im["id"]), "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5}
            for im in original["images"][:2]]
    dets += [{"image_id": image_id(im["id"]), "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5}
             for im in original["images"]]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    report = run_ingest_results(str(path), run="r", warehouse=wh, dataset="d", on_bad_record="skip")
    assert (report.split, report.detections, report.rejects) == ("val2017", len(original["images"]), 2)


# ---------------------------------------------------------------------------- one type per space in a dataset


def _doc_with(original, image, ann=lambda i: i) -> dict:
    return {**original, "images": [{**im, "id": image(im["id"])} for im in original["images"]],
            "annotations": [{**a, "id": ann(a["id"]), "image_id": image(a["image_id"])}
                            for a in original["annotations"]]}


def test_a_second_file_that_disagrees_fails_naming_both(original, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / VAL).write_text(json.dumps(convert(original, lambda i: i)))
    (src / "instances_train2017.json").write_text(json.dumps(_doc_with(original, lambda i: i)))
    wh = str(tmp_path / "wh")
    # in one ingest: the second file (by name) is named, with the first
    first = original["images"][0]["id"]
    with pytest.raises(BadFileError, match=rf"instances_val2017\.json: its image ids are strings \(the first image's "
                       rf"id is '{image_id(first)}'\) but those of instances_train2017\.json are integers \(the first "
                       rf"image's id is {first}\); the files of a dataset need one type per id space"):
        run_ingest([str(src)], warehouse=wh, dataset="d", workers=1)
    assert Warehouse(wh, "d").read_manifest() is None
    # against a file already in the warehouse
    run_ingest([str(src / "instances_train2017.json")], warehouse=wh, dataset="d", workers=1)
    with pytest.raises(BadFileError, match=r"instances_val2017\.json: its image ids are strings .* but those of "
                       r"instances_train2017\.json \(already in the warehouse\) are integers"):
        run_ingest([str(src / VAL)], warehouse=wh, dataset="d", workers=1)
    assert Warehouse(wh, "d").require_manifest().version == 1
    # the spaces that agree need not: integer image ids with string annotation ids is another space
    (src / VAL).write_text(json.dumps(_doc_with(original, lambda i: i, str)))
    with pytest.raises(BadFileError, match=r"its annotation ids are strings \(the first annotation's id is '"):
        run_ingest([str(src / VAL)], warehouse=wh, dataset="d", workers=1)
    (src / VAL).write_text(json.dumps(_doc_with(original, lambda i: i)))
    run_ingest([str(src / VAL)], warehouse=wh, dataset="d", workers=1)
    assert Warehouse(wh, "d").require_manifest().id_types() == IdTypes()


def test_re_ingesting_a_file_may_change_its_types(original, tmp_path):
    src = tmp_path / VAL
    src.write_text(json.dumps(original))
    wh = str(tmp_path / "wh")
    run_ingest([str(src)], warehouse=wh, dataset="d", workers=1)
    src.write_text(json.dumps(convert(original, lambda i: i)))
    run_ingest([str(src)], warehouse=wh, dataset="d", workers=1)  # replaces the file: nothing to disagree with
    w = Warehouse(wh, "d")
    assert w.require_manifest().id_types() == IdTypes("string", "int64", "int64")
    assert {type(i) for i in w.read_table("images").column("id").to_pylist()} == {str}


def test_a_file_without_annotations_takes_the_dataset_types(original, tmp_path):
    """image_info files (no annotations) decide no annotation space: no conflict with string ones."""
    src = tmp_path / "src"
    src.mkdir()
    doc = convert(original, str)
    (src / VAL).write_text(json.dumps(doc))
    (src / "image_info_test2017.json").write_text(json.dumps({"images": doc["images"][:3],
                                                             "categories": doc["categories"]}))
    wh = str(tmp_path / "wh")
    run_ingest([str(src)], warehouse=wh, dataset="d", workers=1)
    m = Warehouse(wh, "d").require_manifest()
    assert {s["source_file"]: s["id_type"] for s in m.sources} == {
        "image_info_test2017.json": "image=string,annotation=string,category=int64",
        VAL: "image=string,annotation=string,category=int64"}


def test_per_image_set_with_string_image_ids(tmp_path):
    d = tmp_path / "sa"
    d.mkdir()
    m = np.zeros((10, 10), np.uint8, order="F")
    m[2:5, 2:5] = 1
    rle = cm.encode(m)
    for n in (1, 2):
        (d / f"sa_{n}.json").write_text(json.dumps({
            "image": {"image_id": image_id(n), "file_name": f"sa_{n}.jpg", "height": 10, "width": 10},
            "annotations": [{"id": 10 * n + k, "bbox": [1, 1, 3, 3], "area": 9,
                             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}} for k in range(2)]}))
    wh = str(tmp_path / "wh")
    run_ingest([str(d)], warehouse=wh, dataset="d", workers=1)
    w = Warehouse(wh, "d")
    assert w.require_manifest().id_types() == IdTypes("string", "int64", "int64")
    assert sorted(w.read_table("annotations").column("image_id").to_pylist()) == [image_id(1)] * 2 + [image_id(2)] * 2
    (d / "sa_3.json").write_text(json.dumps({"image": {"image_id": 3, "file_name": "sa_3.jpg", "height": 10,
                                                       "width": 10}, "annotations": []}))
    with pytest.raises(BadFileError, match=r"sa_3\.json: its image ids are integers \(the first image's id is 3\) "
                       r"but those of sa_1\.json are strings"):
        run_ingest([str(d)], warehouse=wh, dataset="d", workers=1)


# ---------------------------------------------------------------------------- as a user runs it


@pytest.mark.slow
def test_real_commands_on_string_image_ids(original, tmp_path):
    """The default local cluster, a results file with the same string ids, evaluate, export."""
    src = tmp_path / "data" / VAL
    src.parent.mkdir()
    doc = convert(original, lambda i: i)
    src.write_text(json.dumps(doc))
    results = [{**d, "image_id": image_id(d["image_id"])} for d in make_results(original, "bbox", 21, False)]
    dets = tmp_path / "data" / "dets.json"
    dets.write_text(json.dumps(results))
    work = tmp_path / "work"
    work.mkdir()
    common = ["--warehouse", "wh", "--dataset", "d"]
    done = _cocolake("ingest", "--source", str(src.parent / VAL), *common, "--no-progress", "--workers", "2", cwd=work)
    assert done.returncode == 0, done.stderr
    done = _cocolake("ingest-results", str(dets), "--run", "r", *common, "--no-progress", cwd=work)
    assert done.returncode == 0, done.stderr
    done = _cocolake("evaluate", "--run", "r", *common, "--format", "json", cwd=work)
    assert done.returncode == 0, done.stderr
    oracle = _cocoeval(src, results, "bbox")
    np.testing.assert_allclose(list(json.loads(done.stdout)["stats"].values()), oracle.stats, atol=1e-4)
    done = _cocolake("export", *common, "--format", "coco", "--out", "out", "--images", "none", cwd=work)
    assert done.returncode == 0, done.stderr
    exported = json.loads((work / "out" / "annotations" / VAL).read_text())
    assert exported["images"] == doc["images"] and exported["annotations"] == doc["annotations"]
    # a file of integer image ids into the same dataset: one line naming both files
    other = tmp_path / "data" / "instances_train2017.json"
    other.write_text(json.dumps(original))
    done = _cocolake("ingest", "--source", str(other), *common, "--no-progress", "--workers", "1", cwd=work)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "cocolake ingest: error: instances_train2017.json: its image ids are integers (the first image's id is "
        f"{original['images'][0]['id']}) but those of instances_val2017.json (already in the warehouse) are strings")

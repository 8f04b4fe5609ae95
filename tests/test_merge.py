"""cocolake merge: two datasets whose image, annotation and category ids collide, into one.

A is coco-mini's val2017 instances; B is coco-mini's train2017 instances given A's image
and annotation ids, with the category ids reversed for the same names, plus one val2017
image (the same file as in A, under another id) with its annotations. pycocotools loads
the merged COCO export and decodes every mask.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO

from pipeline import views
from pipeline.categories import CategoryMap, load_category_map
from pipeline.errors import ConfigError
from pipeline.export import export
from pipeline.merge import MergeError, merge
from pipeline.runner import run_ingest
from pipeline.warehouse import Warehouse

SHARED_FILE = 0  # index in val2017's images of the image B shares with A


def _b_document(val: dict, train: dict) -> dict:
    b = copy.deepcopy(train)
    a_images = sorted(i["id"] for i in val["images"])
    a_anns = sorted(a["id"] for a in val["annotations"])
    cat_ids = sorted(c["id"] for c in train["categories"])
    perm = dict(zip(cat_ids, reversed(cat_ids)))
    shared = copy.deepcopy(val["images"][SHARED_FILE])
    shared_anns = [copy.deepcopy(a) for a in val["annotations"] if a["image_id"] == shared["id"]]
    b["images"].append(shared)
    b["annotations"] += shared_anns
    # A's image ids in order, then new ones; the shared image gets an id that is not its own in A
    image_ids = [i for i in a_images if i != shared["id"]] + [max(a_images) + k for k in range(1, 10)]
    new_image = {img["id"]: image_ids[k] for k, img in enumerate(b["images"])}
    new_image[shared["id"]] = image_ids[len(b["images"]) - 1]
    for img in b["images"]:
        img["id"] = new_image[img["id"]]
    ann_ids = a_anns + [max(a_anns) + k for k in range(1, len(b["annotations"]) + 1)]
    for k, ann in enumerate(b["annotations"]):
        ann["id"] = ann_ids[k]
        ann["image_id"] = new_image[ann["image_id"]]
        ann["category_id"] = perm[ann["category_id"]]
    for cat in b["categories"]:
        cat["id"] = perm[cat["id"]]
    b["categories"].sort(key=lambda c: c["id"])
    return b


@pytest.fixture(scope="module")
def sources(coco_mini, tmp_path_factory):
    """(warehouse, A's JSON path, B's JSON path) with datasets A and B ingested, and M = merge(A, B)."""
    root = tmp_path_factory.mktemp("merge")
    val_path = coco_mini / "annotations" / "instances_val2017.json"
    val = json.loads(val_path.read_text())
    train = json.loads((coco_mini / "annotations" / "instances_train2017.json").read_text())
    b_dir = root / "b"
    b_dir.mkdir()
    b_path = b_dir / "instances_train2017.json"
    b_path.write_text(json.dumps(_b_document(val, train)))
    wh = str(root / "wh")
    run_ingest([str(val_path)], warehouse=wh, dataset="A", workers=1)
    run_ingest([str(b_path)], warehouse=wh, dataset="B", workers=1)
    merge(wh, ["A", "B"], "M")
    return wh, str(val_path), str(b_path)


def _mask_key(coco: COCO, ann: dict) -> tuple:
    img = coco.imgs[ann["image_id"]]
    mask = coco.annToMask(ann)
    digest = hashlib.sha1(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()
    return img["file_name"], coco.cats[ann["category_id"]]["name"], digest


def _keys(coco: COCO) -> collections.Counter:
    return collections.Counter(_mask_key(coco, a) for a in coco.dataset["annotations"])


def _load(path) -> COCO:
    with open(os.devnull, "w") as quiet:  # pycocotools prints while it indexes
        old, sys.stdout = sys.stdout, quiet
        try:
            return COCO(str(path))
        finally:
            sys.stdout = old


def test_merged_export_loads_in_pycocotools_with_every_source_annotation(sources, tmp_path):
    wh, a_path, b_path = sources
    export(str(tmp_path / "out"), warehouse=wh, dataset="M", format="coco", images="none")
    files = sorted((tmp_path / "out" / "annotations").iterdir())
    assert [f.name for f in files] == ["instances_train2017.json", "instances_val2017.json"]
    merged = [_load(f) for f in files]
    ann_ids = [a["id"] for m in merged for a in m.dataset["annotations"]]
    assert len(ann_ids) == len(set(ann_ids))  # no annotation id twice, in a file or across the splits
    for m in merged:
        image_ids = [i["id"] for i in m.dataset["images"]]
        assert len(image_ids) == len(set(image_ids))
        names = [c["name"] for c in m.dataset["categories"]]
        assert len(names) == len(set(names)) == 80
    # every source annotation is there with the same file, category name and mask; nothing else is
    expected = _keys(_load(a_path)) + _keys(_load(b_path))
    got = _keys(merged[0]) + _keys(merged[1])
    assert got == expected
    # the image B shares with A is one image: the same id in both splits
    shared = json.loads(open(a_path).read())["images"][SHARED_FILE]["file_name"]
    ids = {next(i["id"] for i in m.dataset["images"] if i["file_name"] == shared) for m in merged}
    assert len(ids) == 1
    # categories of the same name are one, with the first source's id
    a_cats = {c["name"]: c["id"] for c in json.loads(open(a_path).read())["categories"]}
    for m in merged:
        assert {c["name"]: c["id"] for c in m.dataset["categories"]} == a_cats


def test_provenance_answers_which_source_and_original_id_in_sql(sources):
    wh, a_path, b_path = sources
    con = views.connect(wh, "M")
    rows = con.execute(
        "SELECT s.source_dataset, s.original_id, a.bbox, a.source_file FROM annotations AS a "
        "JOIN merge_sources AS s ON s.split = a.split AND s.id_space = 'annotations' AND s.annotation_id = a.id"
    ).fetchall()
    expected = set()
    for name, path in (("A", a_path), ("B", b_path)):
        for ann in json.loads(open(path).read())["annotations"]:
            expected.add((name, str(ann["id"]), tuple(ann["bbox"]), f"{name}/instances_{os.path.basename(path)[10:]}"))
    got = {(d, o, tuple(b), f) for d, o, b, f in rows}
    assert len(rows) == len(got) == len(expected)
    assert got == expected
    # the shared image has two sources; every other image one
    counts = con.execute("SELECT image_id, count(*) FROM merge_sources WHERE id_space = 'images' GROUP BY image_id "
                         "HAVING count(*) > 1").fetchall()
    assert len(counts) == 1 and counts[0][1] == 2


def _first_colliding_image(a_path, b_path) -> int:
    """The smallest image id of A that B uses for another image (B's copy of the shared file aside)."""
    a = json.loads(open(a_path).read())
    shared = a["images"][SHARED_FILE]["file_name"]
    b_ids = {i["id"] for i in json.loads(open(b_path).read())["images"] if i["file_name"] != shared}
    return min({i["id"] for i in a["images"]} & b_ids)


def test_keep_fails_with_the_first_colliding_id_and_leaves_the_target(sources):
    wh, a_path, b_path = sources
    first = _first_colliding_image(a_path, b_path)
    target = Warehouse(wh, "M")
    before = open(target.url("_manifest.json"), "rb").read()
    files_before = sorted(os.listdir(target.url("images/split=val2017")))
    with pytest.raises(MergeError, match=rf"--ids keep: image id {first} is in both A and B; use --ids renumber"):
        merge(wh, ["A", "B"], "M", ids="keep")
    assert open(target.url("_manifest.json"), "rb").read() == before
    assert sorted(os.listdir(target.url("images/split=val2017"))) == files_before


def test_missing_source_leaves_the_target_as_it_was(sources):
    wh, *_ = sources
    target = Warehouse(wh, "M")
    before = open(target.url("_manifest.json"), "rb").read()
    with pytest.raises(MergeError, match="--from nope: no dataset 'nope'"):
        merge(wh, ["A", "nope"], "M")
    assert open(target.url("_manifest.json"), "rb").read() == before
    with pytest.raises(MergeError, match="--into A: is also a --from dataset"):
        merge(wh, ["A", "B"], "A")


def test_keep_is_chosen_when_no_id_collides(sources, coco_mini):
    wh, a_path, _ = sources
    run_ingest([str(coco_mini / "annotations" / "instances_train2017.json")], warehouse=wh, dataset="T", workers=1)
    report = merge(wh, ["A", "T"], "AT")
    assert (report.ids, report.reason) == ("keep", "no id collides")
    con = views.connect(wh, "AT")
    val = json.loads(open(a_path).read())
    got = {r[0] for r in con.execute("SELECT id FROM annotations WHERE split = 'val2017'").fetchall()}
    assert got == {a["id"] for a in val["annotations"]}
    assert merge(wh, ["A", "T"], "AT", ids="keep").ids == "keep"


def test_rerunning_replaces_the_dataset(sources):
    wh, *_ = sources
    merge(wh, ["A", "B"], "R")
    merge(wh, ["B"], "R", ids="renumber")
    m = Warehouse(wh, "R").require_manifest()
    assert m.version == 2
    assert m.splits() == ["train2017"]
    assert {p.source_file for p in m.parts if p.table not in ("merge_sources", "category_counts")} == {
        "B/instances_train2017.json"}
    con = views.connect(wh, "R")
    assert con.execute("SELECT count(DISTINCT source_dataset) FROM merge_sources").fetchone()[0] == 1


def test_category_file_renames_merges_and_drops(sources, tmp_path):
    wh, a_path, b_path = sources
    path = tmp_path / "cats.yaml"
    path.write_text("classes:\n  person: human\n  car: vehicle\n  truck: vehicle\n  bicycle: null\n  dog: canine\n"
                    "ids:\n  canine: 500\n")
    merge(wh, ["A", "B"], "C", categories=load_category_map(str(path)))
    con = views.connect(wh, "C")
    source = collections.Counter()
    for p in (a_path, b_path):
        doc = json.loads(open(p).read())
        names = {c["id"]: c["name"] for c in doc["categories"]}
        source.update(names[a["category_id"]] for a in doc["annotations"])
    got = dict(con.execute("SELECT category_name, count(*) FROM annotations_enriched GROUP BY 1").fetchall())
    assert got["human"] == source["person"] and "person" not in got
    assert got["vehicle"] == source["car"] + source["truck"]
    assert "bicycle" not in got and sum(got.values()) == sum(source.values()) - source["bicycle"]
    assert got["canine"] == source["dog"]
    cats = dict(con.execute("SELECT DISTINCT name, id FROM categories").fetchall())
    assert cats["canine"] == 500 and cats["human"] == 1 and "bicycle" not in cats
    assert cats["vehicle"] == 3  # car's id in A, the first source
    assert con.execute("SELECT count(*) FROM annotations WHERE category_id IS NULL").fetchone()[0] == 0
    # unlisted: drop keeps only the names the map lists
    path.write_text("classes:\n  car: vehicle\n  truck: vehicle\nunlisted: drop\n")
    merge(wh, ["A", "B"], "C", categories=load_category_map(str(path)))
    con = views.connect(wh, "C")
    assert con.execute("SELECT category_name, count(*) FROM annotations_enriched GROUP BY 1").fetchall() == [
        ("vehicle", source["car"] + source["truck"])]
    assert con.execute("SELECT DISTINCT name FROM categories").fetchall() == [("vehicle",)]


@pytest.mark.parametrize("text, message", [
    ("classes:\n  doge: dog\n", "classes.doge: no category of the sources is named 'doge'; they are: airplane, "),
    ("classes:\n  car: v\n  truck: w\nids:\n  v: 3\n  w: 3\n", "ids.w: id 3 is given to 'v' too"),
    ("classes:\n  car: v\ncolour: red\n", "colour: unknown key; allowed: classes, ids, unlisted"),
    ("- a\n- b\n", "expected a mapping with a 'classes' key"),
])
def test_category_map_errors_name_file_and_key(sources, tmp_path, text, message):
    wh, *_ = sources
    path = tmp_path / "cats.yaml"
    path.write_text(text)
    before = Warehouse(wh, "M").require_manifest().version
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        merge(wh, ["A", "B"], "M", categories=load_category_map(str(path)))
    assert Warehouse(wh, "M").require_manifest().version == before


def test_category_map_file_missing_and_the_default_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"^--categories nope.yaml: no such file \(give by-name, or a class-map"):
        load_category_map("nope.yaml")
    cmap = CategoryMap({"man": "person", "bike": None})
    assert (cmap.target("man"), cmap.target("bike"), cmap.target("dog")) == ("person", None, "dog")
    assert CategoryMap({"man": "person"}, unlisted="drop").target("dog") is None


TINY_STRING_IDS = {
    "images": [{"id": "img-a", "file_name": "a.jpg", "height": 10, "width": 10}],
    "annotations": [{"id": "ann-a", "image_id": "img-a", "category_id": "cat-p", "bbox": [1, 1, 4, 4], "area": 16,
                     "iscrowd": 0, "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}],
    "categories": [{"id": "cat-p", "name": "person", "supercategory": "person"}],
}


def test_string_ids_with_int_ids_keep_fails_renumber_works(sources, tmp_path):
    wh, *_ = sources
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps(TINY_STRING_IDS))
    run_ingest([str(path)], warehouse=wh, dataset="S", workers=1)
    assert Warehouse(wh, "S").require_manifest().id_types().text() == "string"
    with pytest.raises(MergeError, match=r"--ids keep: the sources' image ids are of different types "
                                         r"\(A: int64, S: string\); use --ids renumber"):
        merge(wh, ["A", "S"], "AS", ids="keep")
    assert Warehouse(wh, "AS").read_manifest() is None
    report = merge(wh, ["A", "S"], "AS")
    assert report.ids == "renumber"
    con = views.connect(wh, "AS")
    row = con.execute("SELECT a.id, a.image_id, s.original_id, a.category_id FROM annotations AS a "
                      "JOIN merge_sources AS s ON s.id_space = 'annotations' AND s.annotation_id = a.id "
                      "AND s.split = a.split "
                      "WHERE s.source_dataset = 'S'").fetchall()
    assert len(row) == 1 and row[0][2] == "ann-a" and isinstance(row[0][0], int) and row[0][3] == 1
    img = con.execute("SELECT file_name FROM images WHERE id = ?", [row[0][1]]).fetchone()
    assert img == ("a.jpg",)


def test_cocolake_merge_command(sources, tmp_path):
    wh, a_path, b_path = sources
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"),
                                                                    os.path.dirname(os.path.dirname(__file__))) if p)}
    run = subprocess.run([sys.executable, "-m", "pipeline", "merge", "--warehouse", wh, "--from", "A", "--from", "B",
                          "--into", "cli"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    first = _first_colliding_image(a_path, b_path)
    assert run.stdout.splitlines()[0] == f"cli: merged from A, B; ids renumber (image id {first} is in both A and B)"
    assert Warehouse(wh, "cli").require_manifest().splits() == ["train2017", "val2017"]
    bad = subprocess.run([sys.executable, "-m", "pipeline", "merge", "--warehouse", wh, "--from", "A", "--from",
                          "nope", "--into", "cli"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"cocolake merge: error: --from nope: no dataset 'nope' in {wh} (no {wh}/nope/_manifest.json)"]


def _tiny(images: list, licenses: list, category: str) -> dict:
    return {
        "licenses": [{"id": i, "name": n, "url": u} for i, n, u in licenses],
        "images": [{"id": i, "file_name": f, "height": h, "width": h, "license": lic,
                    **({"coco_url": url} if url else {})} for i, f, h, lic, url in images],
        "annotations": [{"id": k + 1, "image_id": img[0], "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4,
                         "iscrowd": 0} for k, img in enumerate(images)],
        "categories": [{"id": 1, "name": category, "supercategory": "animal"}],
    }


# X: a.jpg (with a URL) and c.jpg 10x10; Y: the same a.jpg under another name but the same URL,
# c.jpg 10x10 (no URL: the same file by name and size), c.jpg 20x20 (another file); license
# ids 1 and 2 mean other licenses in Y, and category id 1 another animal
TINY_X = _tiny([(1, "a.jpg", 10, 1, "http://h/a.jpg"), (2, "c.jpg", 10, 2, None)],
               [(1, "CC-BY", "u/by"), (2, "CC0", "u/0")], "cat")
TINY_Y = _tiny([(1, "a_copy.jpg", 12, 2, "http://h/a.jpg"), (2, "c.jpg", 10, 1, None), (3, "c.jpg", 20, 2, None)],
               [(1, "CC0", "u/0"), (2, "Mine", "u/mine")], "dog")


def test_same_file_by_url_or_name_and_size_is_one_image_and_licenses_by_content(tmp_path):
    wh = str(tmp_path / "wh")
    for name, doc in (("X", TINY_X), ("Y", TINY_Y)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "instances_val2017.json").write_text(json.dumps(doc))
        run_ingest([str(tmp_path / name / "instances_val2017.json")], warehouse=wh, dataset=name, workers=1)
    report = merge(wh, ["X", "Y"], "XY")
    assert (report.ids, report.shared_images) == ("renumber", 2)
    export(str(tmp_path / "out"), warehouse=wh, dataset="XY", format="coco", images="none")
    doc = json.loads((tmp_path / "out" / "annotations" / "instances_val2017.json").read_text())
    assert [(i["id"], i["file_name"], i["height"], i["license"]) for i in doc["images"]] == [
        (1, "a.jpg", 10, 1), (2, "c.jpg", 10, 2), (3, "c.jpg", 20, 3)]
    assert [(lic["id"], lic["name"]) for lic in doc["licenses"]] == [(1, "CC-BY"), (2, "CC0"), (3, "Mine")]
    assert [(c["id"], c["name"]) for c in doc["categories"]] == [(1, "cat"), (2, "dog")]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in doc["annotations"]] == [
        (1, 1, 1), (2, 2, 1), (3, 1, 2), (4, 2, 2), (5, 3, 2)]
    # Y's own rows keep its file's view of the image, with the merged license ids
    con = views.connect(wh, "XY")
    assert con.execute("SELECT id, file_name, license FROM raw_images WHERE source_file LIKE 'Y/%' "
                       "ORDER BY record_index").fetchall() == [(1, "a_copy.jpg", 3), (2, "c.jpg", 2), (3, "c.jpg", 3)]


def test_keypoints_and_captions_are_carried_as_they_are(sources, coco_mini, tmp_path):
    wh, *_ = sources
    run_ingest([str(coco_mini / "annotations")], warehouse=wh, dataset="F", workers=1)
    merge(wh, ["F", "B"], "BF")  # F first: its category ids win
    export(str(tmp_path / "out"), warehouse=wh, dataset="BF", format="coco", images="none")
    for split in ("train2017", "val2017"):
        source = json.loads((coco_mini / "annotations" / f"person_keypoints_{split}.json").read_text())
        merged = json.loads((tmp_path / "out" / "annotations" / f"person_keypoints_{split}.json").read_text())
        names = {i["id"]: i["file_name"] for i in source["images"]}
        merged_names = {i["id"]: i["file_name"] for i in merged["images"]}
        assert sorted((names[a["image_id"]], a["keypoints"], a["num_keypoints"]) for a in source["annotations"]) == \
            sorted((merged_names[a["image_id"]], a["keypoints"], a["num_keypoints"]) for a in merged["annotations"])
        assert merged["categories"] == source["categories"]  # keypoint names and skeleton
        source = json.loads((coco_mini / "annotations" / f"captions_{split}.json").read_text())
        merged = json.loads((tmp_path / "out" / "annotations" / f"captions_{split}.json").read_text())
        names = {i["id"]: i["file_name"] for i in source["images"]}
        merged_names = {i["id"]: i["file_name"] for i in merged["images"]}
        assert sorted((names[a["image_id"]], a["caption"]) for a in source["annotations"]) == \
            sorted((merged_names[a["image_id"]], a["caption"]) for a in merged["annotations"])
        ids = [a["id"] for a in merged["annotations"]]
        assert len(ids) == len(set(ids))


def test_a_merge_failing_while_writing_leaves_the_target_and_no_stray_parts(sources, monkeypatch):
    wh, *_ = sources
    import pipeline.merge.rows as merge_module

    merge(wh, ["A", "B"], "W")
    target = Warehouse(wh, "W")
    before = open(target.url("_manifest.json"), "rb").read()
    calls = []
    real = merge_module.write_part

    def failing(fs, path, batches, schema):
        calls.append(path)
        if len(calls) == 12:  # a disk that fills up half-way
            raise OSError(28, "No space left on device")
        return real(fs, path, batches, schema)

    monkeypatch.setattr(merge_module, "write_part", failing)
    with pytest.raises(MergeError, match=r"/W/\w+/split=\S+/part-\d+\.parquet: cannot write: No space left on device$"):
        merge(wh, ["B", "A"], "W")
    assert open(target.url("_manifest.json"), "rb").read() == before
    m = target.require_manifest()
    listed = {p.path for p in m.parts} | set(m.previous_parts)
    on_disk = {os.path.relpath(os.path.join(d, f), target.url("")) for d, _, fs in os.walk(target.url(""))
               for f in fs if f.endswith(".parquet")}
    assert on_disk == listed
    assert views.connect(wh, "W").execute("SELECT count(*) FROM merge_sources WHERE source_dataset = 'A' "
                                          "AND id_space = 'images'").fetchone()[0] == 79


def test_keep_keeps_each_id_space_type(tmp_path):
    """String image ids with integer annotation and category ids stay so under keep."""
    wh = str(tmp_path / "wh")
    for name, first in (("P", 1), ("Q", 10)):
        doc = _tiny([(f"{name}-{k}", f"{name}{k}.jpg", 10, 1, None) for k in (1, 2)], [(1, "CC0", "u/0")], "cat")
        for ann in doc["annotations"]:
            ann["id"] += first
        (tmp_path / name).mkdir()
        (tmp_path / name / "instances_val2017.json").write_text(json.dumps(doc))
        run_ingest([str(tmp_path / name / "instances_val2017.json")], warehouse=wh, dataset=name, workers=1)
    report = merge(wh, ["P", "Q"], "PQ")
    assert (report.ids, report.reason) == ("keep", "no id collides")
    assert Warehouse(wh, "PQ").require_manifest().id_types().text() == "image=string,annotation=int64,category=int64"
    export(str(tmp_path / "out"), warehouse=wh, dataset="PQ", format="coco", images="none")
    coco = _load(tmp_path / "out" / "annotations" / "instances_val2017.json")
    assert sorted(coco.imgs) == ["P-1", "P-2", "Q-1", "Q-2"]
    assert sorted((a["id"], a["image_id"]) for a in coco.dataset["annotations"]) == [
        (2, "P-1"), (3, "P-2"), (11, "Q-1"), (12, "Q-2")]


def test_string_category_ids_stay_strings_and_new_names_get_the_next_number(tmp_path):
    wh = str(tmp_path / "wh")
    for name, animal in (("P", "cat"), ("Q", "dog")):
        doc = _tiny([(f"{name}-1", f"{name}.jpg", 10, 1, None)], [(1, "CC0", "u/0")], animal)
        doc["categories"][0]["id"] = "1"
        doc["annotations"][0].update(id=f"{name}-a", category_id="1")
        (tmp_path / name).mkdir()
        (tmp_path / name / "instances_val2017.json").write_text(json.dumps(doc))
        run_ingest([str(tmp_path / name / "instances_val2017.json")], warehouse=wh, dataset=name, workers=1)
    assert merge(wh, ["P", "Q"], "PQ").ids == "keep"
    assert Warehouse(wh, "PQ").require_manifest().id_types().text() == "string"
    export(str(tmp_path / "out"), warehouse=wh, dataset="PQ", format="coco", images="none")
    coco = _load(tmp_path / "out" / "annotations" / "instances_val2017.json")
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [("1", "cat"), ("2", "dog")]
    assert sorted((a["id"], a["category_id"]) for a in coco.dataset["annotations"]) == [("P-a", "1"), ("Q-a", "2")]


def test_the_target_comes_from_into_else_the_environment_never_a_default(sources, monkeypatch, capsys):
    from pipeline.cli import main

    wh, *_ = sources
    monkeypatch.delenv("COCOLAKE_DATASET", raising=False)
    monkeypatch.setenv("COCOLAKE_WAREHOUSE", wh)
    assert main(["merge", "--from", "A", "--from", "B"]) == 1
    assert capsys.readouterr().err.strip() == (
        "cocolake merge: error: --into NAME: give the dataset to write (or set $COCOLAKE_DATASET)")
    assert Warehouse(wh, "demo").read_manifest() is None
    monkeypatch.setenv("COCOLAKE_DATASET", "from-env")
    assert main(["merge", "--from", "A", "--from", "B", "--ids", "renumber"]) == 0
    assert capsys.readouterr().out.startswith("from-env: merged from A, B; ids renumber (asked for)")
    assert Warehouse(wh, "from-env").require_manifest().splits() == ["train2017", "val2017"]


def test_a_failed_garbage_collection_after_the_commit_is_a_warning(sources, caplog):
    import pathlib

    from tests.test_warehouse import block_the_trash

    wh, _, _ = sources
    merge(wh, ["A", "B"], "G")
    block_the_trash(pathlib.Path(Warehouse(wh, "G").url("")))
    with caplog.at_level("WARNING"):
        merge(wh, ["B"], "G", ids="renumber")
    version = Warehouse(wh, "G").require_manifest().version
    assert f"version {version} committed, but removing old parts failed" in caplog.text
    assert views.connect(wh, "G").execute("SELECT DISTINCT source_dataset FROM merge_sources").fetchall() == [("B",)]

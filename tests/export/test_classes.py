"""pipeline/export/classes.py: --classes all|used|FILE on COCO and YOLO exports, and the class-map file."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from pycocotools.coco import COCO

from pipeline.errors import ConfigError
from pipeline.export import export
from pipeline.export.classes import ClassSpec, load_class_file, resolve

COCOLAKE = str(pathlib.Path(sys.executable).with_name("cocolake"))
SPLITS = ("train2017", "val2017")
DOG_CAT = "category_name IN ('dog', 'cat')"


def source(coco_mini, split) -> dict:
    return json.loads((coco_mini / "annotations" / f"instances_{split}.json").read_text())


def read_labels(path) -> list[int]:
    return [int(line.split()[0]) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def write_map(tmp_path, data, name="classes.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


# ---------------------------------------------------------------------------- the file


@pytest.mark.parametrize("text, message", [
    ("classes: [dog, cat]\n", r"classes\.yaml: classes: Input should be a valid dictionary"),
    ("classes: {dog: animal}\nrename: {}\n", r"classes\.yaml: rename: unknown key; allowed: classes, ids, unlisted"),
    ("ids: {animal: 1}\n", r"classes\.yaml: classes: field required"),
    ("classes: {dog: animal}\nids: {animal: one}\n", r"classes\.yaml: ids\.animal: .*integer.*; got 'one'"),
    ("classes: {dog: ''}\n", r"classes\.yaml: classes: dog: the target name is empty"),
    ("classes: {dog: animal}\nunlisted: maybe\n", r"classes\.yaml: unlisted: .*'keep' or 'drop'.*got 'maybe'"),
    ("classes: {dog: [a\n", r"classes\.yaml: line \d+, column \d+: not valid YAML"),
    ("- dog\n", r"classes\.yaml: expected a mapping with a 'classes' key, got list"),
])
def test_bad_class_files_name_the_file_and_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_class_file(write_map(tmp_path, text))


def test_a_missing_class_file_says_what_else_to_give(tmp_path):
    with pytest.raises(ConfigError, match=r"--classes .*nope\.yaml: no such file \(give all, used, or a class-map"):
        load_class_file(tmp_path / "nope.yaml")


CATS = [(1, "person"), (17, "cat"), (18, "dog"), (3, "car")]


def spec(tmp_path, data) -> ClassSpec:
    path = write_map(tmp_path, data)
    return ClassSpec("file", path, load_class_file(path))


def test_resolve_all_used_and_a_file():
    full = resolve(ClassSpec("all"), CATS, set())
    assert [(t.id, t.name) for t in full.targets] == [(1, "person"), (3, "car"), (17, "cat"), (18, "dog")]
    assert full.identity
    used = resolve(ClassSpec("used"), CATS, {18, 17})
    assert [(t.id, t.name) for t in used.targets] == [(17, "cat"), (18, "dog")]
    assert used.index() == {17: 0, 18: 1} and sorted(used.dropped()) == [1, 3]


def test_a_file_renames_merges_and_drops(tmp_path):
    cmap = resolve(spec(tmp_path, {"classes": {"dog": "animal", "cat": "animal", "person": None, "car": "auto"}}),
                   CATS, set())
    assert [(t.id, t.name, t.sources) for t in cmap.targets] == [(3, "auto", (3,)), (17, "animal", (17, 18))]
    assert cmap.of_source == {1: None, 3: 3, 17: 17, 18: 17}
    given = resolve(spec(tmp_path, {"classes": {"dog": "animal", "cat": "animal"}, "ids": {"animal": 100},
                                    "unlisted": "drop"}), CATS, set())
    assert [(t.id, t.name) for t in given.targets] == [(100, "animal")]
    assert given.of_source == {1: None, 3: None, 17: 100, 18: 100}


@pytest.mark.parametrize("data, message", [
    ({"classes": {"doge": "animal"}}, r"classes\.yaml: classes\.doge: no category .* named 'doge'; they are: car, "),
    ({"classes": {"dog": "animal"}, "ids": {"anmal": 5}}, r"classes\.yaml: ids\.anmal: no category is mapped onto"),
    ({"classes": {"dog": "animal"}, "ids": {"animal": 17}},
     r"classes\.yaml: ids\.animal: targets 'cat' and 'animal' would both get id 17"),
])
def test_a_file_that_does_not_fit_the_dataset(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        resolve(spec(tmp_path, data), CATS, set())


# ---------------------------------------------------------------------------- YOLO


def test_yolo_of_a_dog_cat_subset_has_two_classes_by_default(mini_warehouse, coco_mini, tmp_path):
    """The real command from a directory of its own: nc 2, names [cat, dog], labels 0/1, the summary's counts."""
    wh, ds = mini_warehouse
    done = subprocess.run([COCOLAKE, "export", "--warehouse", wh, "--dataset", ds, "--where", DOG_CAT,
                           "--format", "yolo", "--out", "y", "--images", "none", "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    assert data["nc"] == 2 and data["names"] == {0: "cat", 1: "dog"} and data["category_ids"] == {0: 17, 1: 18}
    crowd = 0
    for split in SPLITS:
        doc = source(coco_mini, split)
        images = {i["id"]: i for i in doc["images"]}
        want: dict[str, list[int]] = {}
        for a in doc["annotations"]:
            if a["category_id"] in (17, 18):
                if a["iscrowd"]:
                    crowd += 1
                    continue
                stem = os.path.splitext(images[a["image_id"]]["file_name"])[0]
                want.setdefault(stem, []).append(a["category_id"] - 17)
        got = {p.stem: read_labels(p) for p in (tmp_path / "y" / "labels" / split).glob("*.txt")} \
            if (tmp_path / "y" / "labels" / split).is_dir() else {}
        assert {k: sorted(v) for k, v in got.items() if v} == {k: sorted(v) for k, v in want.items()}
    line = [ln for ln in done.stdout.splitlines() if "annotations left out" in ln]
    assert (line == [f"  annotations left out: {crowd} crowd"]) if crowd else not line
    all_classes = export(tmp_path / "all", format="yolo", warehouse=wh, dataset=ds, where=DOG_CAT, images="none",
                         classes="all")
    assert yaml.safe_load((tmp_path / "all" / "data.yaml").read_text())["nc"] == 80
    assert all_classes.left_out == ({"crowd": crowd} if crowd else {})


# a tiny dataset with one annotation of each kind the summary counts
TINY = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
    "categories": [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 17, "iscrowd": 0, "area": 100.0, "bbox": [10, 10, 10, 10],
         "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]},
        {"id": 2, "image_id": 1, "category_id": 18, "iscrowd": 0, "area": 100.0, "bbox": [30, 10, 10, 10],
         "segmentation": []},  # no mask
        {"id": 3, "image_id": 1, "category_id": 18, "iscrowd": 1, "area": 100.0, "bbox": [50, 10, 10, 10],
         "segmentation": {"counts": [0, 10, 7990], "size": [80, 100]}},  # crowd
        {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": [70, 10, 10, 10],
         "segmentation": [[70, 10, 80, 10, 80, 20, 70, 20]]},  # person: dropped by the map
        {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100.0, "bbox": [70, 40, 10, 10],
         "segmentation": [[70, 40, 80, 40, 80, 50, 70, 50]]},
    ],
}


@pytest.fixture(scope="module")
def tiny_warehouse(tmp_path_factory):
    from pipeline.ingest.run import run_ingest

    src = tmp_path_factory.mktemp("tiny-src") / "instances_val2017.json"
    src.write_text(json.dumps(TINY))
    wh = tmp_path_factory.mktemp("tiny-wh")
    run_ingest([str(src)], warehouse=str(wh), dataset="tiny", workers=1)
    return str(wh), "tiny"


def test_the_summary_says_why_annotations_were_left_out(tiny_warehouse, tmp_path):
    wh, ds = tiny_warehouse
    path = write_map(tmp_path, {"classes": {"cat": "animal", "dog": "animal", "person": None}})
    done = subprocess.run([COCOLAKE, "export", "--warehouse", wh, "--dataset", ds, "--format", "yolo",
                           "--task", "segment", "--classes", path, "--out", "y", "--images", "none"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "  annotations left out: 2 dropped class, 1 no mask, 1 crowd\n" in done.stdout
    assert read_labels(tmp_path / "y" / "labels" / "val2017" / "a.txt") == [0]
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    assert data["names"] == {0: "animal"} and data["category_ids"] == {0: 17}


# ---------------------------------------------------------------------------- COCO


def test_coco_keeps_every_category_by_default_and_used_keeps_the_subsets(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    export(tmp_path / "a", format="coco", warehouse=wh, dataset=ds, where=DOG_CAT, images="none", splits=["val2017"])
    doc = json.loads((tmp_path / "a" / "annotations" / "instances_val2017.json").read_text())
    assert doc["categories"] == source(coco_mini, "val2017")["categories"]
    export(tmp_path / "u", format="coco", warehouse=wh, dataset=ds, where=DOG_CAT, images="none",
           splits=["val2017"], classes="used")
    got = COCO(str(tmp_path / "u" / "annotations" / "instances_val2017.json"))
    want = [c for c in source(coco_mini, "val2017")["categories"] if c["id"] in (17, 18)]
    assert got.dataset["categories"] == want  # the source records, ids kept
    assert sorted(got.getCatIds()) == [17, 18] and len(got.getAnnIds()) == len(
        [a for a in source(coco_mini, "val2017")["annotations"] if a["category_id"] in (17, 18)])


def test_coco_with_a_class_map_renames_merges_and_drops(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    path = write_map(tmp_path, "# pets become one class, people go\nclasses:\n  dog: animal\n  cat: animal\n"
                     "  person: null\nids:\n  animal: 100\n")
    done = subprocess.run([COCOLAKE, "export", "--warehouse", wh, "--dataset", ds, "--where",
                           "category_name IN ('dog', 'cat', 'person')", "--format", "coco", "--classes", path,
                           "--out", "c", "--images", "none", "--split", "val2017"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    src = source(coco_mini, "val2017")
    persons = sum(1 for a in src["annotations"] if a["category_id"] == 1)
    pets = [a for a in src["annotations"] if a["category_id"] in (17, 18)]
    assert f"  annotations left out: {persons} dropped class\n" in done.stdout
    got = COCO(str(tmp_path / "c" / "annotations" / "instances_val2017.json"))
    names = {c["id"]: c["name"] for c in got.dataset["categories"]}
    assert names[100] == "animal" and 1 not in names and 17 not in names and 18 not in names
    assert len(names) == 80 - 3 + 1  # the unlisted ones stay
    assert got.loadCats(100)[0]["supercategory"] == "animal"  # the record of cat, the first merged category
    assert sorted(got.getAnnIds(catIds=[100])) == sorted(a["id"] for a in pets)
    assert len(got.getAnnIds()) == len(pets)
    # the people's images stay, now with no objects of theirs
    person_images = {a["image_id"] for a in src["annotations"] if a["category_id"] == 1}
    assert person_images <= set(got.getImgIds())
    persons_kp = COCO(str(tmp_path / "c" / "annotations" / "person_keypoints_val2017.json")) \
        if (tmp_path / "c" / "annotations" / "person_keypoints_val2017.json").exists() else None
    assert persons_kp is None or not persons_kp.getAnnIds(catIds=[1])


def test_parquet_refuses_class_edits_and_bad_files_stop_the_command(mini_warehouse, tmp_path):
    wh, ds = mini_warehouse
    with pytest.raises(ConfigError, match=r"classes: 'used' does not apply to --format parquet"):
        export(tmp_path / "p", format="parquet", warehouse=wh, dataset=ds, classes="used")
    bad = write_map(tmp_path, "classes: {doge: animal}\n")
    done = subprocess.run([COCOLAKE, "export", "--warehouse", wh, "--dataset", ds, "--format", "yolo",
                           "--classes", bad, "--out", "y", "--images", "none"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"cocolake export: error: {bad}: classes.doge: no category")
    assert not (tmp_path / "y" / "data.yaml").exists()


def test_help_states_the_defaults():
    done = subprocess.run([COCOLAKE, "export", "--help"], capture_output=True, text=True, timeout=120)
    flat = " ".join(done.stdout.split())
    assert "Default: all for coco and parquet (round trip), used for yolo and hf" in flat

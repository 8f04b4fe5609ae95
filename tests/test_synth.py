"""pipeline/synth.py and ``cocolake synth``: deterministic, COCO-shaped, pycocotools-readable."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter

import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline import synth
from pipeline.cli import main
from pipeline.errors import ConfigError

ANNOTATION_FILES = [
    f"{kind}_{split}2017.json"
    for split in ("train", "val")
    for kind in ("instances", "person_keypoints", "captions", "stuff")
] + ["image_info_test2017.json"]

# pycocotools 2.0.x decode() under NumPy 2 warns on every call
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

THING_IDS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
             31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56,
             57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86,
             87, 88, 89, 90}


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = synth.generate(out, images=40, seed=7)
    docs = {name: json.loads((out / "annotations" / name).read_text(encoding="utf-8")) for name in ANNOTATION_FILES}
    return out, summary, docs


def test_same_arguments_give_identical_bytes(dataset, tmp_path):
    out, _summary, _docs = dataset
    again = synth.generate(tmp_path / "again", images=40, seed=7)
    assert _tree(tmp_path / "again") == _tree(out)
    assert again["images"] == {"train2017": 32, "val2017": 8, "test2017": 2}
    other = synth.generate(tmp_path / "other", images=40, seed=8)
    assert other["images"] == again["images"]
    assert _tree(tmp_path / "other") != _tree(out)


def test_every_file_loads_in_pycocotools_and_every_mask_decodes(dataset):
    out, summary, docs = dataset
    masks = 0
    for name in ANNOTATION_FILES:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(out / "annotations" / name))
        assert len(coco.dataset["images"]) == {"train": 32, "val": 8, "test": 2}[name.rsplit("_", 1)[1][:-9]]
        for ann in coco.dataset.get("annotations", []):
            if "segmentation" not in ann:
                continue
            m = coco.annToMask(ann)
            img = coco.imgs[ann["image_id"]]
            assert m.shape == (img["height"], img["width"])
            assert m.sum() > 0, (name, ann["id"])
            masks += 1
        assert len(coco.dataset.get("annotations", [])) == summary["annotations"][name]
    assert masks > 300


def test_files_are_compact_utf8(dataset):
    out, _summary, _docs = dataset
    raw = (out / "annotations" / "captions_train2017.json").read_bytes()
    assert raw.startswith(b'{"info":{"description":"cocolake synthetic')
    assert b'", "' not in raw[:2000]
    text = raw.decode("utf-8")
    assert any(ord(c) > 127 for c in text) and '\\"' in text and "\\\\" in text


def test_images_and_jpegs(dataset):
    out, _summary, docs = dataset
    for name, split in [("instances_train2017.json", "train2017"), ("instances_val2017.json", "val2017"),
                        ("image_info_test2017.json", "test2017")]:
        images = docs[name]["images"]
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(i["file_name"] for i in images)
        for img in images:
            keys = ["license", "file_name", "coco_url", "height", "width", "date_captured"]
            keys += [] if split == "test2017" else ["flickr_url"]
            assert list(img) == [*keys, "id"]
            assert img["file_name"] == f"{img['id']:012d}.jpg"
            assert img["coco_url"] == f"http://images.cocodataset.org/{split}/{img['file_name']}"
            assert 64 <= img["height"] <= 160 and 64 <= img["width"] <= 160
            assert 1 <= img["license"] <= 8
            with Image.open(out / split / img["file_name"]) as im:
                assert im.format == "JPEG" and im.size == (img["width"], img["height"])
                im.load()
    ids = [i["id"] for n in ("instances_train2017.json", "instances_val2017.json", "image_info_test2017.json")
           for i in docs[n]["images"]]
    assert len(ids) == len(set(ids))


def test_instances_look_like_coco(dataset):
    _out, _summary, docs = dataset
    for split in ("train", "val"):
        doc = docs[f"instances_{split}2017.json"]
        assert [c["id"] for c in doc["categories"]] == sorted(THING_IDS)
        assert [lic["id"] for lic in doc["licenses"]] == list(range(1, 9))
        sizes = {i["id"]: (i["height"], i["width"]) for i in doc["images"]}
        anns = doc["annotations"]
        assert len({a["id"] for a in anns}) == len(anns)
        crowd = [a for a in anns if a["iscrowd"]]
        assert crowd and all(isinstance(a["segmentation"]["counts"], list) for a in crowd)
        assert all(a["id"] == 900_000_000_000 + a["category_id"] * 100_000_000 + a["image_id"] for a in crowd)
        for a in crowd:
            h, w = sizes[a["image_id"]]
            assert a["segmentation"]["size"] == [h, w] and sum(a["segmentation"]["counts"]) == h * w
            rle = mask_utils.frPyObjects(a["segmentation"], h, w)
            assert a["area"] == int(mask_utils.area(rle))
            assert a["bbox"] == [int(v) for v in mask_utils.toBbox(rle)]
        polys = [a for a in anns if not a["iscrowd"]]
        parts = Counter(len(a["segmentation"]) for a in polys)
        assert parts[1] and (parts[2] or parts[3])
        outside = 0
        for a in polys:
            h, w = sizes[a["image_id"]]
            xs = [v for p in a["segmentation"] for v in p[0::2]]
            ys = [v for p in a["segmentation"] for v in p[1::2]]
            assert all(round(v, 2) == v for v in xs + ys)
            outside += min(xs) < 0 or min(ys) < 0 or max(xs) > w or max(ys) > h
            x0, y0 = max(0, min(xs)), max(0, min(ys))
            assert a["bbox"] == pytest.approx([x0, y0, min(w, max(xs)) - x0, min(h, max(ys)) - y0], abs=0.011)
            rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))
            assert a["area"] == float(mask_utils.area(rle))
        assert outside > 0
    train = docs["instances_train2017.json"]
    annotated = {a["image_id"] for a in train["annotations"]}
    assert train["images"][-1]["id"] not in annotated


def test_keypoints_reuse_person_instances(dataset):
    _out, _summary, docs = dataset
    for split in ("train", "val"):
        kp = docs[f"person_keypoints_{split}2017.json"]
        [cat] = kp["categories"]
        assert (cat["id"], cat["name"], len(cat["keypoints"]), len(cat["skeleton"])) == (1, "person", 17, 19)
        persons = {a["id"]: a for a in docs[f"instances_{split}2017.json"]["annotations"] if a["category_id"] == 1}
        assert kp["annotations"] and {a["id"] for a in kp["annotations"]} <= set(persons)
        for a in kp["annotations"]:
            assert len(a["keypoints"]) == 51 and all(isinstance(v, int) for v in a["keypoints"])
            assert a["num_keypoints"] == sum(1 for v in a["keypoints"][2::3] if v > 0)
            assert a["segmentation"] == persons[a["id"]]["segmentation"]
        assert any(a["num_keypoints"] > 0 for a in kp["annotations"])


def test_captions_and_stuff(dataset):
    _out, _summary, docs = dataset
    caps = docs["captions_train2017.json"]
    assert "categories" not in caps
    per_image = Counter(a["image_id"] for a in caps["annotations"])
    assert set(per_image) == {i["id"] for i in caps["images"]} and set(per_image.values()) <= {5, 6, 7}
    assert len({a["id"] for a in caps["annotations"]}) == len(caps["annotations"])
    stuff = docs["stuff_val2017.json"]
    assert [c["id"] for c in stuff["categories"]] == list(range(92, 184))
    assert stuff["categories"][-1] == {"supercategory": "other", "id": 183, "name": "other"}
    sizes = {i["id"]: (i["height"], i["width"]) for i in stuff["images"]}
    covered = Counter()
    for a in stuff["annotations"]:
        seg = a["segmentation"]
        assert list(seg) == ["size", "counts"] and isinstance(seg["counts"], str)
        assert seg["size"] == list(sizes[a["image_id"]])
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
        assert a["area"] == float(mask_utils.area(rle)) and a["iscrowd"] == 0
        covered[a["image_id"]] += int(mask_utils.area(rle))
    assert all(covered[i] == h * w for i, (h, w) in sizes.items())  # stuff labels partition each image


def test_ensure_generated_only_regenerates_on_new_parameters(tmp_path):
    out = tmp_path / "d"
    assert synth.ensure_generated(out, images=4, seed=1)
    stamp = (out / synth.MARKER).stat().st_mtime_ns
    assert not synth.ensure_generated(out, images=4, seed=1)
    assert (out / synth.MARKER).stat().st_mtime_ns == stamp
    assert synth.ensure_generated(out, images=3, seed=1)
    assert len(list((out / "train2017").iterdir())) + len(list((out / "val2017").iterdir())) == 3


def test_refuses_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty and was not made by cocolake synth"):
        synth.generate(tmp_path, images=4)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="need at least 2"):
        synth.generate(tmp_path / "new", images=1)


def test_cli(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "d"), "--images", "5", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 7 images" in printed and "annotations/stuff_val2017.json" in printed
    synth.generate(tmp_path / "lib", images=5, seed=2)
    assert _tree(tmp_path / "d") == _tree(tmp_path / "lib")
    with pytest.raises(SystemExit) as exit_:
        main(["synth", "--out", str(tmp_path / "x"), "--images", "1"])
    assert exit_.value.code == 2 and "need at least 2 images" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "taken")]) == 1
    assert "cocolake synth: error: " in capsys.readouterr().err

"""pipeline/export/hf.py: one row per image, read by Hugging Face datasets, pyarrow and polars."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest

# datasets reads these when imported: no hub, and its caches in a temporary folder, not the home
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="cocolake-test-hf-home-"))

import datasets  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.export import export, hf  # noqa: E402

COCOLAKE = str(pathlib.Path(sys.executable).with_name("cocolake"))
SPLITS = ("train2017", "val2017")


def gt(coco_mini, kind, split) -> COCO:
    return COCO(str(coco_mini / "annotations" / f"{kind}_{split}.json"))


def load(out, tmp_path, **kw):
    return datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "hf-cache"), **kw)


@pytest.fixture(scope="module")
def full_export(mini_warehouse, coco_mini, tmp_path_factory):
    """Everything, images embedded, by the real command from a directory of its own."""
    wh, ds = mini_warehouse
    cwd = tmp_path_factory.mktemp("hf")
    done = subprocess.run([COCOLAKE, "export", "--warehouse", wh, "--dataset", ds, "--format", "hf",
                           "--out", "out", "--image-root", str(coco_mini), "--no-progress"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return cwd / "out", done.stdout


def test_layout_and_summary(full_export):
    out, stdout = full_export
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train2017-00000-of-00001.parquet", "val2017-00000-of-00001.parquet"]
    assert "  data/val2017: 79 images, 624 objects, 1 shards\n" in stdout


def test_load_dataset_gives_named_classes_images_and_the_source_objects(full_export, coco_mini, tmp_path):
    out, _ = full_export
    dsd = load(out, tmp_path)
    assert sorted(dsd) == list(SPLITS)
    for split in SPLITS:
        src = gt(coco_mini, "instances", split)
        caps = gt(coco_mini, "captions", split)
        kps = gt(coco_mini, "person_keypoints", split)
        ds = dsd[split]
        category = ds.features["objects"]["category"].feature
        assert isinstance(category, datasets.ClassLabel)
        # --classes used: one class list for every split, in category-id order
        used = sorted({a["category_id"] for s in SPLITS for a in gt(coco_mini, "instances", s).dataset["annotations"]})
        assert category.names == [src.cats[c]["name"] for c in used]
        assert isinstance(ds.features["image"], datasets.Image)
        assert len(ds) == len(src.getImgIds())
        assert sorted(ds["image_id"]) == sorted(src.getImgIds())
        for row in ds:
            image = src.imgs[row["image_id"]]
            assert (row["width"], row["height"], row["file_name"]) == (image["width"], image["height"],
                                                                       image["file_name"])
            assert row["image"].size == (image["width"], image["height"])  # a decoded PIL image
            anns = src.loadAnns(src.getAnnIds(imgIds=[row["image_id"]]))
            objs = row["objects"]
            assert sorted(objs["id"]) == sorted(a["id"] for a in anns)
            by_id = {a["id"]: a for a in anns}
            for k, oid in enumerate(objs["id"]):
                a = by_id[oid]
                np.testing.assert_allclose(objs["bbox"][k], a["bbox"])
                assert category.int2str(objs["category"][k]) == src.cats[a["category_id"]]["name"]
                assert objs["area"][k] == pytest.approx(a["area"]) and objs["iscrowd"][k] == a["iscrowd"]
                rle = objs["segmentation"][k]
                from pycocotools import mask as mask_utils

                got = mask_utils.decode({"counts": rle["counts"].encode(), "size": rle["size"]})
                assert np.array_equal(got, src.annToMask(a))
                kp = kps.anns.get(oid)
                assert objs["keypoints"][k] == (kp["keypoints"] if kp else None)
                assert objs["num_keypoints"][k] == (kp["num_keypoints"] if kp else None)
            want_caps = [c["caption"] for c in caps.imgToAnns.get(row["image_id"], [])]
            assert sorted(row["captions"]) == sorted(want_caps)


def test_features_metadata_equals_what_datasets_builds(full_export):
    out, _ = full_export
    table = pq.read_table(out / "data" / "val2017-00000-of-00001.parquet")
    meta = json.loads(table.schema.metadata[b"huggingface"])
    feats = datasets.Features.from_dict(meta["info"]["features"])
    names = feats["objects"]["category"].feature.names
    want = datasets.Features({
        "image": datasets.Image(), "image_id": datasets.Value("int64"), "file_name": datasets.Value("string"),
        "width": datasets.Value("int64"), "height": datasets.Value("int64"),
        "objects": datasets.Sequence({
            "id": datasets.Value("int64"), "bbox": datasets.Sequence(datasets.Value("float64"), length=4),
            "category": datasets.ClassLabel(names=names), "area": datasets.Value("float64"),
            "iscrowd": datasets.Value("int32"),
            "segmentation": {"counts": datasets.Value("string"),
                             "size": datasets.Sequence(datasets.Value("int32"), length=2)},
            "keypoints": datasets.Sequence(datasets.Value("float64")), "num_keypoints": datasets.Value("int64"),
        }),
        "captions": datasets.Sequence(datasets.Value("string")),
    })
    assert feats == want
    # the Arrow types are the ones datasets derives: nothing to cast when it loads
    assert feats.arrow_schema.remove_metadata() == table.schema.remove_metadata()


def test_streaming_pyarrow_and_polars_read_it(full_export, coco_mini, tmp_path):
    out, _ = full_export
    streamed = load(out, tmp_path, split="val2017", streaming=True)
    rows = list(streamed)
    src = gt(coco_mini, "instances", "val2017")
    assert len(rows) == len(src.getImgIds())
    assert rows[0]["image"].size == (rows[0]["width"], rows[0]["height"])
    assert sum(len(r["objects"]["id"]) for r in rows) == len(src.getAnnIds())
    path = out / "data" / "val2017-00000-of-00001.parquet"
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 1 and meta.row_group(0).num_rows == 79  # <= 100 rows with image bytes
    table = pq.read_table(path, columns=["image_id", "objects"])
    assert sorted(table.column("image_id").to_pylist()) == sorted(src.getImgIds())
    df = pl.read_parquet(out / "data" / "*.parquet")
    assert df.height == 80 + 79
    n = df.select(pl.col("objects").struct.field("id").list.len().sum()).item()
    assert n == 739 + 624
    first = df.filter(pl.col("image_id") == 139).row(0, named=True)
    assert first["image"]["bytes"] == (coco_mini / "val2017" / first["file_name"]).read_bytes()


def test_a_dog_cat_subset_without_image_bytes(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    report = export(tmp_path / "out", format="hf", warehouse=wh, dataset=ds, images="none",
                    where="category_name IN ('dog', 'cat')", image_root=str(coco_mini))
    assert report.files["data/val2017"]["shards"] == 1
    dsd = load(tmp_path / "out", tmp_path)
    assert dsd["val2017"].features["objects"]["category"].feature.names == ["cat", "dog"]
    for split in SPLITS:
        src = gt(coco_mini, "instances", split)
        want = [a for a in src.dataset["annotations"] if a["category_id"] in (17, 18)]
        rows = list(dsd[split])
        assert len(rows) == len({a["image_id"] for a in want})
        got = sorted((oid, c) for r in rows for oid, c in zip(r["objects"]["id"], r["objects"]["category"]))
        assert got == sorted((a["id"], a["category_id"] - 17) for a in want)
        raw = pq.read_table(next((tmp_path / "out" / "data").glob(f"{split}-*.parquet"))).column("image").to_pylist()
        for cell in raw:
            assert cell["bytes"] is None and os.path.isabs(cell["path"])
            assert pathlib.Path(cell["path"]).read_bytes() == (coco_mini / split / pathlib.Path(cell["path"]).name
                                                               ).read_bytes()
        for r in rows:
            assert r["image"].size == (r["width"], r["height"])  # opened from the absolute path


def test_images_in_a_zip_are_opened_through_a_zip_url(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    archive = tmp_path / "val2017.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((coco_mini / "val2017").iterdir()):
            z.write(p, f"val2017/{p.name}")
    export(tmp_path / "out", format="hf", warehouse=wh, dataset=ds, images="none", splits=["val2017"],
           where="category_name = 'giraffe'", image_root=str(archive))
    rows = list(load(tmp_path / "out", tmp_path, split="val2017"))
    assert rows
    table = pq.read_table(tmp_path / "out" / "data" / "val2017-00000-of-00001.parquet")
    assert table.column("image").to_pylist() == [
        {"bytes": None, "path": f"zip://val2017/{name}::{archive}"} for name in table.column("file_name").to_pylist()]
    for r in rows:
        assert r["image"].size == (r["width"], r["height"])


def test_shards_are_named_of_n_and_load_together(mini_warehouse, tmp_path, monkeypatch):
    wh, ds = mini_warehouse
    monkeypatch.setattr(hf, "ROW_GROUP_ROWS", 10)
    monkeypatch.setattr(hf, "MAX_SHARD_BYTES", 1)  # every row group a shard of its own
    report = export(tmp_path / "out", format="hf", warehouse=wh, dataset=ds, images="none", splits=["train2017"])
    names = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
    assert names == [f"train2017-{k:05d}-of-00008.parquet" for k in range(8)]
    assert report.files == {"data/train2017": {"images": 80, "objects": 739, "shards": 8}}
    ds_ = load(tmp_path / "out", tmp_path, split="train2017")
    assert len(ds_) == 80 and sum(len(o["id"]) for o in ds_["objects"]) == 739


def test_link_is_refused_and_a_class_map_applies(mini_warehouse, tmp_path):
    wh, ds = mini_warehouse
    with pytest.raises(ConfigError, match="images: 'link' has no meaning for --format hf"):
        export(tmp_path / "l", format="hf", warehouse=wh, dataset=ds, images="link")
    cmap = tmp_path / "classes.yaml"
    cmap.write_text("classes: {dog: animal, cat: animal, person: null}\nunlisted: drop\n")
    report = export(tmp_path / "out", format="hf", warehouse=wh, dataset=ds, images="none", classes=str(cmap),
                    splits=["val2017"])
    loaded = load(tmp_path / "out", tmp_path, split="val2017")
    assert loaded.features["objects"]["category"].feature.names == ["animal"]
    assert sum(len(o["id"]) for o in loaded["objects"]) == 5  # the val2017 dogs and cats
    assert report.left_out == {"dropped class": 624 - 5}


# what pip prints when it cannot reach the package index (no network, no proxy, no DNS)
_UNREACHABLE = ("from versions: none", "NewConnectionError", "Network is unreachable", "Max retries exceeded",
                "Temporary failure in name resolution", "ConnectTimeout", "ProxyError")

_LOAD_3X = """
import json, sys, datasets
assert datasets.__version__.startswith("3."), datasets.__version__
ds = datasets.load_dataset("parquet", data_dir=sys.argv[1], cache_dir=sys.argv[2], split="val2017")
row = ds[0]
print(json.dumps({"names": ds.features["objects"].feature["category"].names, "rows": len(ds),
                  "size": list(row["image"].size), "wh": [row["width"], row["height"]],
                  "objects": sum(len(o["id"]) for o in ds["objects"])}))
"""


@pytest.mark.slow
def test_datasets_3_reads_the_sequence_features_too(full_export, coco_mini, tmp_path):
    """datasets before 4.0 has no List feature: the metadata's Sequence form is what it reads."""
    out, _ = full_export
    target = tmp_path / "datasets-3"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "--no-deps", "--target", str(target), "datasets==3.6.0"],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        if any(m in done.stderr for m in _UNREACHABLE) and not ci:
            pytest.skip(f"pip cannot reach the package index: {done.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"pip install datasets==3.6.0 failed:\n{done.stderr[-3000:]}")
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HOME": str(tmp_path / "hf-home")}
    run = subprocess.run([sys.executable, "-c", _LOAD_3X, str(out), str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    src = gt(coco_mini, "instances", "val2017")
    assert got["rows"] == len(src.getImgIds()) and got["objects"] == len(src.getAnnIds())
    assert got["size"] == got["wh"] and "dog" in got["names"] and got["names"][0] == "person"

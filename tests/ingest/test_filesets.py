"""per_image: a directory of many small per-image JSON files (SA-1B layout) as one source."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pipeline.ingest import filesets as per_image
from pipeline.errors import BadFileError, SourceError
from pipeline.ingest.run import run_ingest
from pipeline.warehouse import Warehouse

FILES = 300

# one SA-1B annotation file, as published: a single `image` whose id is `image_id`,
# annotations without `image_id`, masks as compressed RLE
SA1B_DOC = {
    "image": {"image_id": 7, "width": 6, "height": 4, "file_name": "sa_7.jpg"},
    "annotations": [
        {
            "id": 70,
            "segmentation": {"size": [4, 6], "counts": "5220;"},
            "bbox": [1.0, 1.0, 2.0, 2.0],
            "area": 4,
            "predicted_iou": 0.9,
            "point_coords": [[2.0, 2.0]],
            "crop_box": [0.0, 0.0, 6.0, 4.0],
            "stability_score": 0.95,
        }
    ],
}


def _sa1b_doc(rng, image_id: int) -> dict:
    h, w = int(rng.integers(8, 40)), int(rng.integers(8, 40))
    anns = []
    for k in range(int(rng.integers(0, 6))):
        m = np.zeros((h, w), dtype=np.uint8, order="F")
        y, x = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
        m[y: y + int(rng.integers(1, h - y)), x: x + int(rng.integers(1, w - x))] = 1
        m ^= (rng.random((h, w)) < 0.1).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(m))
        anns.append({
            "id": image_id * 100 + k,
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": int(mask_utils.area(rle)),
            "predicted_iou": round(float(rng.random()), 4),
            "point_coords": [[float(x), float(y)]],
            "crop_box": [0.0, 0.0, float(w), float(h)],
            "stability_score": round(float(rng.random()), 4),
        })
    return {"image": {"image_id": image_id, "width": w, "height": h, "file_name": f"sa_{image_id}.jpg"},
            "annotations": anns}


@pytest.fixture(scope="module")
def sa1b(tmp_path_factory):
    """FILES per-image documents in two sub-directories; returns (directory, {name: document})."""
    root = tmp_path_factory.mktemp("sa1b") / "sa1b"
    rng = np.random.default_rng(3)
    docs = {}
    for i in range(FILES):
        image_id = 1000 + i
        doc = _sa1b_doc(rng, image_id)
        sub = root / f"sa_{i // 200:06d}"
        sub.mkdir(parents=True, exist_ok=True)
        name = f"sa_{image_id}.json"
        (sub / name).write_text(json.dumps(doc))
        docs[name] = doc
    return root, docs


@pytest.fixture(scope="module")
def ingested(sa1b, tmp_path_factory):
    root, docs = sa1b
    out = tmp_path_factory.mktemp("wh")
    report = run_ingest([str(root)], warehouse=str(out), dataset="sa", workers=1, batch_files=64)
    return Warehouse(str(out), "sa"), report


def test_rows_are_the_concatenation_of_the_files(sa1b, ingested):
    _, docs = sa1b
    wh, _ = ingested
    images = wh.read_table("images", "train").to_pylist()
    anns = wh.read_table("annotations", "train").to_pylist()
    names = sorted(docs)  # files are read in path order; the sub-directories sort like the names here
    assert [(r["source_file"], r["id"], r["height"], r["width"], r["file_name"]) for r in images] == [
        (n, docs[n]["image"]["image_id"], docs[n]["image"]["height"], docs[n]["image"]["width"],
         docs[n]["image"]["file_name"]) for n in names
    ]
    expected = [(n, docs[n]["image"]["image_id"], a) for n in names for a in docs[n]["annotations"]]
    assert len(anns) == len(expected) > FILES
    for row, (name, image_id, a) in zip(anns, expected):
        assert (row["source_file"], row["id"], row["image_id"]) == (name, a["id"], image_id)
        assert row["bbox"] == a["bbox"] and row["area"] == a["area"] and row["kind"] == "instances"
        extra = json.loads(row["extra"])
        assert extra == {k: a[k] for k in ("predicted_iou", "point_coords", "crop_box", "stability_score")}


def test_masks_are_kept_exactly(sa1b, ingested):
    _, docs = sa1b
    wh, _ = ingested
    source = {a["id"]: a["segmentation"] for d in docs.values() for a in d["annotations"]}
    rows = wh.read_table("annotations", "train").to_pylist()
    assert {r["id"]: {"size": r["rle_size"], "counts": r["rle_counts"]} for r in rows} == source
    for r in rows:
        assert r["segmentation_format"] == "rle"
        assert r["mask_area"] == mask_utils.area({"size": r["rle_size"], "counts": r["rle_counts"].encode()})


def test_one_task_and_one_part_per_table_per_batch(ingested):
    wh, report = ingested
    batches = -(-FILES // 64)
    m = wh.require_manifest()
    for table in ("images", "annotations", "info"):
        assert len(m.files(table, "train")) == batches, table
    # the split's per-category counts (a derived table) come from no source file
    assert {p.source_file for p in m.parts if p.table != "category_counts"} == {"sa1b"}
    assert [p.source_file for p in m.parts if p.table == "category_counts"] == [""]
    [entry] = report.files
    assert entry["files"] == FILES and entry["batches"] == batches and entry["records"]["images"] == FILES
    info = wh.read_table("info", "train").to_pylist()
    assert len(info) == FILES
    assert json.loads(info[0]["document"]) == {"images": [], "annotations": []}


def test_batches_also_bounded_by_bytes(sa1b, tmp_path):
    root, _ = sa1b
    [fileset], rest = per_image.find_sets([str(root)], chunk_bytes=20_000, batch_files=None, split=None)
    assert rest == [] and fileset.name == "sa1b" and fileset.split == "train" and len(fileset.files) == FILES
    batches = fileset.batches(20_000, None)
    assert len(batches) > 1 and [f for b in batches for f in b] == list(fileset.files)
    assert all(sum(f.size for f in b) <= 20_000 for b in batches)


def test_reingesting_the_set_replaces_it(sa1b, tmp_path):
    root, docs = sa1b
    for _ in range(2):
        run_ingest([str(root)], warehouse=str(tmp_path), dataset="sa", workers=1, split="val")
    wh = Warehouse(str(tmp_path), "sa")
    assert wh.read_table("images", "val").num_rows == FILES
    assert wh.require_manifest().version == 2


def test_coco_named_directory_is_not_a_set(coco_mini):
    sets, rest = per_image.find_sets([str(coco_mini / "annotations")], chunk_bytes=16 << 20, batch_files=None,
                                     split=None)
    assert sets == [] and rest == [str(coco_mini / "annotations")]


def test_small_coco_files_batched_give_the_same_rows(coco_mini, tmp_path):
    """--batch-files on ordinary COCO files: same rows as one task per chunk."""
    src = str(coco_mini / "annotations")
    run_ingest([src], warehouse=str(tmp_path / "a"), dataset="d", workers=1, split="all")
    run_ingest([src], warehouse=str(tmp_path / "b"), dataset="d", workers=1, split="all", batch_files=4)
    a, b = Warehouse(str(tmp_path / "a"), "d"), Warehouse(str(tmp_path / "b"), "d")
    for table in ("images", "annotations", "keypoints", "captions", "categories", "licenses", "info"):
        ta, tb = a.read_table(table), b.read_table(table)
        key = ["source_file", "record_index"]
        ta, tb = ta.sort_by([(k, "ascending") for k in key]), tb.sort_by([(k, "ascending") for k in key])
        if table == "info":  # the scan keeps the source's bytes; a batch writes the parsed skeleton
            assert [json.loads(x) for x in ta.column("document").to_pylist()] == [
                json.loads(x) for x in tb.column("document").to_pylist()]
            ta, tb = ta.drop_columns(["document"]), tb.drop_columns(["document"])
        assert ta.equals(tb), table
    assert len(b.require_manifest().files("annotations")) == 2  # 6 files, 4 per batch


def test_sa1b_document_flattens(tmp_path):
    flat = per_image.flatten_document(SA1B_DOC, "sa_7.json")
    img = flat.tables["images"].to_pylist()[0]
    ann = flat.tables["annotations"].to_pylist()[0]
    assert (img["id"], img["height"], img["width"]) == (7, 4, 6)
    assert json.loads(img["extra"]) == {"image_id": 7}
    assert (ann["image_id"], ann["rle_counts"], ann["rle_size"], ann["mask_area"]) == (7, "5220;", [4, 6], 4)
    assert flat.kind == "instances" and flat.records == {"images": 1, "annotations": 1}


def test_duplicate_image_ids_across_files_fail_and_commit_nothing(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    for name in ("sa_1.json", "sa_2.json"):
        (d / name).write_text(json.dumps(SA1B_DOC))
    with pytest.raises(BadFileError, match=r"set: 1 image id\(s\) appear in more than one file \(7\)"):
        run_ingest([str(d)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)
    assert Warehouse(str(tmp_path / "wh"), "d").read_manifest() is None
    assert not list((tmp_path / "wh").rglob("*.parquet"))


def test_bad_file_in_a_set_is_named(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    (d / "sa_1.json").write_text(json.dumps(SA1B_DOC))
    (d / "sa_2.json").write_text('{"image": {"image_id": 8, "width": 6, "height": 4}, "annotations": [')
    with pytest.raises(BadFileError, match=r"sa_2.json: invalid JSON near byte"):
        run_ingest([str(d)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)


def test_file_names_must_be_distinct_within_a_set(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "set" / sub).mkdir(parents=True)
        (tmp_path / "set" / sub / "sa_1.json").write_text(json.dumps(SA1B_DOC))
    with pytest.raises(SourceError, match="two files are both named sa_1.json"):
        per_image.find_sets([str(tmp_path / "set")], chunk_bytes=1 << 20, batch_files=None, split=None)


def test_cli_batch_files(sa1b, tmp_path, capsys):
    from pipeline.cli import main

    root, _ = sa1b
    assert main(["ingest", "--source", str(root), "--warehouse", str(tmp_path), "--dataset", "sa", "--workers", "1",
                 "--split", "sa1b", "--batch-files", "100", "--no-progress"]) == 0
    assert "sa1b" in capsys.readouterr().out
    m = Warehouse(str(tmp_path), "sa").require_manifest()
    assert m.splits() == ["sa1b"] and len(m.files("images")) == 3


def test_a_glob_lists_the_same_set_without_hidden_files(sa1b, tmp_path):
    root, _ = sa1b
    [by_dir], _ = per_image.find_sets([str(root)], chunk_bytes=1 << 20, batch_files=None, split=None)
    [by_glob], _ = per_image.find_sets([f"{root}/*/sa_*.json"], chunk_bytes=1 << 20, batch_files=None, split=None)
    assert by_glob.files == by_dir.files and by_glob.name == "sa_*.json"
    (tmp_path / "set" / ".partial").mkdir(parents=True)
    (tmp_path / "set" / ".partial" / "sa_1.json").write_text("{")
    for name in ("sa_2.json", "sa_3.json", ".sa_4.json"):
        (tmp_path / "set" / name).write_text(json.dumps(SA1B_DOC))
    for url in (str(tmp_path / "set"), f"{tmp_path}/set/*/*.json", f"{tmp_path}/set/*.json"):
        sets, _ = per_image.find_sets([url], chunk_bytes=1 << 20, batch_files=1, split=None)
        assert [f.name for s in sets for f in s.files] == ([] if url.endswith("*/*.json") else
                                                            ["sa_2.json", "sa_3.json"]), url


def test_one_per_image_file(tmp_path):
    path = tmp_path / "sa_7.json"
    path.write_text(json.dumps(SA1B_DOC))
    with pytest.raises(BadFileError, match=r"sa_7.json: a per-image file .*give --batch-files"):
        run_ingest([str(path)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)
    report = run_ingest([str(path)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1, batch_files=1)
    assert report.files[0]["source_file"] == "sa_7.json" and report.rows[("annotations", "train")] == 1


def test_batched_coco_files_keep_the_split_of_their_names(coco_mini, tmp_path):
    src = coco_mini / "annotations"
    report = run_ingest([str(src / "instances_val2017.json")], warehouse=str(tmp_path), dataset="d", workers=1,
                        batch_files=10)
    assert report.files[0]["split"] == "val2017" and report.rows[("annotations", "val2017")] == 624
    [s], _ = per_image.find_sets([str(src)], chunk_bytes=16 << 20, batch_files=10, split=None)
    assert s.split == "train"  # train2017 and val2017 names: no single split


def test_duplicate_ids_within_a_file_are_named(tmp_path):
    doc = {**SA1B_DOC, "annotations": SA1B_DOC["annotations"] * 2}
    with pytest.raises(BadFileError, match=r"sa_7.json: 1 duplicate annotation id\(s\) \(70\); ids must be unique"):
        per_image.flatten_document(doc, "sa_7.json")


@pytest.mark.parametrize("doc, message", [
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]},
     "an instances file needs 'categories'; the file has none"),
    ({"annotations": [{"id": 1, "image_id": 1, "caption": "a cat"}]},
     "has 'annotations' but no 'images'; annotations need their images"),
    ({"images": {"id": 1}}, "top-level 'images' is a dict, expected a list"),
])
def test_a_document_and_a_per_image_set_file_fail_the_same_shape_check(doc, message, tmp_path):
    from pipeline.ingest import plan, sources

    path = tmp_path / "x_val2017.json"
    path.write_text(json.dumps(doc))
    [sf] = sources.resolve([str(path)], cache_dir=str(tmp_path / "cache"))
    with pytest.raises(BadFileError, match=f"^x_val2017.json: {message}$"):
        plan.plan_file(sf, plan.IngestOptions())
    with pytest.raises(BadFileError, match=f"^x_val2017.json: {message}$"):
        per_image.flatten_document(doc, "x_val2017.json")

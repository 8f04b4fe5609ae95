"""pipeline/export/images.py: copy, link and fetch the subset's images; never outside DIR."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import pytest

from pipeline.export import ExportError, export
from pipeline.export.images import safe_relpath
from pipeline.ingest.run import run_ingest

DOGS = "category_name = 'dog'"


def _dog_files(coco_mini) -> list[str]:
    doc = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    dog = next(c["id"] for c in doc["categories"] if c["name"] == "dog")
    ids = {a["image_id"] for a in doc["annotations"] if a["category_id"] == dog}
    return sorted(i["file_name"] for i in doc["images"] if i["id"] in ids)


@pytest.fixture
def served(http_server, coco_mini):
    """The loopback server with coco-mini's val2017 JPEGs under /val2017/."""
    shutil.copytree(coco_mini / "val2017", http_server.root / "val2017")
    return http_server


def _same_files(out, coco_mini, names):
    for name in names:
        assert (out / "val2017" / name).read_bytes() == (coco_mini / "val2017" / name).read_bytes(), name


# ---------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    "name, problem",
    [
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share\\x.jpg", "absolute path"),
        ("../x.jpg", "'..'"),
        ("a/../../x.jpg", "'..'"),
        ("a\\..\\..\\x.jpg", "'..'"),
        ("C:\\Windows\\x.jpg", "drive letter"),
        ("c:x.jpg", "drive letter"),
        ("a\x00.jpg", "NUL"),
        ("", "empty"),
        ("./", "names no file"),
    ],
)
def test_unsafe_file_names_are_rejected(name, problem):
    with pytest.raises(ExportError, match=problem):
        safe_relpath(name, 7)


def test_safe_file_names_are_kept_relative():
    assert safe_relpath("000000397133.jpg") == "000000397133.jpg"
    assert safe_relpath("./sub/dir/x.jpg") == "sub/dir/x.jpg"
    assert safe_relpath("sub\\x.jpg") == "sub/x.jpg"


@pytest.mark.parametrize("bad", ["../../escape.jpg", "/tmp/abs.jpg", "C:/drive.jpg"])
def test_export_refuses_a_file_name_outside_dir_before_writing_any_image(tmp_path, coco_mini, bad):
    doc = {
        "images": [
            {"id": 1, "file_name": "000000397133.jpg", "height": 427, "width": 640},
            {"id": 2, "file_name": bad, "height": 10, "width": 10},
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "x"}],
    }
    src = tmp_path / "instances_val2017.json"
    src.write_text(json.dumps(doc))
    run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="evil", workers=1)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="outside the export directory") as info:
        export(out, warehouse=str(tmp_path / "wh"), dataset="evil", image_root=str(coco_mini))
    assert "image id=2" in str(info.value)
    assert not (out / "val2017").exists()
    assert not list(tmp_path.rglob("*.jpg"))


# ---------------------------------------------------------------------------- local roots


def test_copy_and_link_from_a_directory(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    names = _dog_files(coco_mini)
    report = export(tmp_path / "copy", warehouse=wh, dataset=ds, where=DOGS, splits=["val2017"],
                    image_root=str(coco_mini))
    assert report.images_copied == len(names) and sorted(os.listdir(tmp_path / "copy" / "val2017")) == names
    _same_files(tmp_path / "copy", coco_mini, names)
    assert not (tmp_path / "copy" / "val2017" / names[0]).is_symlink()
    export(tmp_path / "link", warehouse=wh, dataset=ds, where=DOGS, splits=["val2017"], images="link",
           image_root=str(coco_mini))
    for name in names:
        linked = tmp_path / "link" / "val2017" / name
        assert linked.is_symlink() or os.path.samefile(linked, coco_mini / "val2017" / name)


def test_zip_root_with_split_template(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    names = _dog_files(coco_mini)
    archive = tmp_path / "val2017.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in names:
            z.write(coco_mini / "val2017" / name, f"val2017/{name}")
    export(tmp_path / "out", warehouse=wh, dataset=ds, where=DOGS, splits=["val2017"],
           image_root=str(tmp_path / "{split}.zip"))
    _same_files(tmp_path / "out", coco_mini, names)


def test_missing_local_image_names_the_paths_tried(mini_warehouse, tmp_path):
    wh, ds = mini_warehouse
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match=r"could not be written; first: .*not found as"):
        export(tmp_path / "out", warehouse=wh, dataset=ds, where=DOGS, image_root=str(tmp_path / "empty"))


# ---------------------------------------------------------------------------- HTTP


def test_fetch_from_a_url_root_in_parallel_with_progress(mini_warehouse, coco_mini, served, tmp_path):
    wh, ds = mini_warehouse
    names = _dog_files(coco_mini)
    calls = []
    report = export(tmp_path, warehouse=wh, dataset=ds, where=DOGS, splits=["val2017"],
                    image_root=served.url(), threads=4, progress=lambda *a: calls.append(a))
    assert report.images_copied == len(names)
    _same_files(tmp_path, coco_mini, names)
    assert calls[0] == ("images", 0, len(names)) and calls[-1] == ("images", len(names), len(names))
    assert all(served.count(f"val2017/{n}", "GET") >= 1 for n in names)
    assert not list(tmp_path.rglob("*.part"))


def test_transient_errors_and_cut_connections_are_retried(mini_warehouse, coco_mini, served, tmp_path):
    wh, ds = mini_warehouse
    names = _dog_files(coco_mini)
    served.fail(f"val2017/{names[0]}", 500, times=1)
    served.cut(f"val2017/{names[1]}", after=1000, times=1)
    export(tmp_path, warehouse=wh, dataset=ds, where=DOGS, splits=["val2017"], image_root=served.url())
    _same_files(tmp_path, coco_mini, names)
    assert served.count(f"val2017/{names[0]}", "GET") == 2
    assert served.count(f"val2017/{names[1]}", "GET") == 2


def test_a_missing_url_fails_the_export_after_trying_every_image(mini_warehouse, coco_mini, served, tmp_path):
    wh, ds = mini_warehouse
    names = _dog_files(coco_mini)
    (served.root / "val2017" / names[1]).unlink()
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=f"1 of {len(names)} images could not be written; first: {names[1]}.*"
                       "nothing was exported"):
        export(out, warehouse=wh, dataset=ds, where=DOGS, splits=["val2017"], image_root=served.url())
    assert all(served.count(f"val2017/{n}", "GET") >= 1 for n in names)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_fetch_by_coco_url(coco_mini, served, tmp_path):
    names = sorted(os.listdir(coco_mini / "val2017"))[:3]
    doc = {
        "images": [{"id": k, "file_name": n, "height": 10, "width": 10, "coco_url": served.url(f"val2017/{n}")}
                   for k, n in enumerate(names, 1)],
        "annotations": [],
        "categories": [{"id": 1, "name": "x"}],
    }
    src = tmp_path / "instances_val2017.json"
    src.write_text(json.dumps(doc))
    run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="urls", workers=1)
    report = export(tmp_path / "out", warehouse=str(tmp_path / "wh"), dataset="urls")
    assert report.images_copied == 3
    _same_files(tmp_path / "out", coco_mini, names)
    # the parquet export fetches the same bytes into image_bytes
    import pyarrow.parquet as pq

    export(tmp_path / "pq", format="parquet", warehouse=str(tmp_path / "wh"), dataset="urls")
    table = pq.read_table(tmp_path / "pq" / "urls" / "images", columns=["file_name", "image_bytes"])
    for row in table.to_pylist():
        assert row["image_bytes"] == (coco_mini / "val2017" / row["file_name"]).read_bytes()

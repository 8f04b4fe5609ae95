"""pipeline/export/output.py: --out never mixes two exports, never holds half of one, never loses a user's files."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import fsspec
import pytest

from pipeline.cli import main
from pipeline.export import ExportError, export
from pipeline.export.output import MARKER
from pipeline.ingest.run import run_ingest
from pipeline.warehouse import Warehouse

GIRAFFES = "category_name = 'giraffe'"


def _tree(root: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _export(capsys, *argv) -> tuple[int, str]:
    code = main(["export", "--no-progress", *argv])
    return code, capsys.readouterr().err


@pytest.fixture
def wh_args(mini_warehouse):
    return ["--warehouse", mini_warehouse[0], "--dataset", mini_warehouse[1], "--where", GIRAFFES]


@pytest.fixture
def lacking_root(coco_mini, tmp_path):
    """An image root with every coco-mini image but the first giraffe image of val2017."""
    doc = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    giraffe = next(c["id"] for c in doc["categories"] if c["name"] == "giraffe")
    first = min(a["image_id"] for a in doc["annotations"] if a["category_id"] == giraffe)
    missing = next(i["file_name"] for i in doc["images"] if i["id"] == first)
    root = tmp_path / "images"
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
        for p in (coco_mini / split).iterdir():
            if p.name != missing:
                (root / split / p.name).symlink_to(p)
    return root, missing


# ---------------------------------------------------------------------------- a second export


def test_a_second_export_into_the_same_out_is_refused_and_leaves_the_first_whole(wh_args, tmp_path, capsys):
    out = tmp_path / "out"
    assert _export(capsys, *wh_args, "--format", "coco", "--out", str(out), "--images", "none")[0] == 0
    first = _tree(out)
    assert MARKER in first and "annotations/instances_val2017.json" in first
    code, err = _export(capsys, *wh_args, "--format", "yolo", "--out", str(out), "--images", "none")
    assert code == 1
    assert err == (f"cocolake export: error: --out {out}: is not empty ({len(os.listdir(out))} entries); give "
                   "--overwrite to replace it whole, or choose a new directory\n")
    assert _tree(out) == first  # no data.yaml dropped into the COCO export


def test_overwrite_replaces_an_earlier_export_whole(wh_args, coco_mini, tmp_path, capsys):
    out = tmp_path / "out"
    assert _export(capsys, *wh_args, "--format", "coco", "--out", str(out), "--image-root", str(coco_mini))[0] == 0
    assert (out / "val2017").is_dir()
    code, err = _export(capsys, *wh_args, "--format", "yolo", "--out", str(out), "--images", "none", "--overwrite")
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted([MARKER, "data.yaml", "labels"])
    assert json.loads((out / MARKER).read_text())["format"] == "yolo"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # neither the build nor the replaced export is left beside


def test_an_empty_directory_is_filled_and_a_symlinked_one_keeps_its_link(wh_args, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _export(capsys, *wh_args, "--format", "coco", "--out", str(tmp_path / "empty"), "--images", "none")[0] == 0
    assert (tmp_path / "empty" / "annotations" / "instances_val2017.json").is_file()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert _export(capsys, *wh_args, "--format", "coco", "--out", str(tmp_path / "link"), "--images", "none")[0] == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "annotations").is_dir()


# ---------------------------------------------------------------------------- what is never replaced


def test_overwrite_never_replaces_a_directory_that_is_not_an_export(wh_args, tmp_path, capsys):
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    before = _tree(home)
    code, err = _export(capsys, *wh_args, "--format", "coco", "--out", str(home), "--images", "none", "--overwrite")
    assert code == 1 and err.count("\n") == 1
    assert f"--out {home}: holds files that are not a cocolake export (no {MARKER})" in err
    assert _tree(home) == before and (home / "photos").is_dir()
    assert sorted(os.listdir(tmp_path)) == ["home"]


@pytest.mark.parametrize("where, message", [
    ("warehouse", "is the warehouse"),
    ("parent", "holds the warehouse"),
    ("inside", "is inside the warehouse"),
])
def test_the_warehouse_is_never_an_export_target(coco_mini, tmp_path, capsys, where, message):
    wh = tmp_path / "lake" / "wh"
    run_ingest([str(coco_mini / "annotations" / "instances_val2017.json")], warehouse=str(wh), dataset="d", workers=1)
    before = _tree(tmp_path)
    out = {"warehouse": wh, "parent": tmp_path / "lake", "inside": wh / "d" / "x"}[where]
    code, err = _export(capsys, "--warehouse", str(wh), "--dataset", "d", "--format", "parquet", "--out", str(out),
                        "--images", "none", "--overwrite")
    assert code == 1 and err.count("\n") == 1 and message in err
    assert _tree(tmp_path) == before


def test_the_current_directory_is_never_replaced(wh_args, tmp_path, capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for out in (".", str(tmp_path)):
        code, err = _export(capsys, *wh_args, "--format", "coco", "--out", out, "--images", "none", "--overwrite")
        assert code == 1 and f"--out {out}: holds the current directory" in err
    assert os.listdir(here) == [] and sorted(os.listdir(tmp_path)) == ["here"]


# ---------------------------------------------------------------------------- a failed export


@pytest.mark.parametrize("fmt", ["coco", "yolo", "parquet"])
def test_an_unreachable_image_leaves_nothing_at_out(wh_args, lacking_root, tmp_path, capsys, fmt):
    root, missing = lacking_root
    out = tmp_path / "out"
    code, err = _export(capsys, *wh_args, "--format", fmt, "--out", str(out), "--image-root", str(root))
    assert code == 1 and err.count("\n") == 1
    assert f"first: {missing}" in err and "nothing was exported" in err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["images"]


def test_a_failed_overwrite_keeps_the_earlier_export(wh_args, coco_mini, lacking_root, tmp_path, capsys):
    root, _ = lacking_root
    out = tmp_path / "out"
    assert _export(capsys, *wh_args, "--format", "coco", "--out", str(out), "--image-root", str(coco_mini))[0] == 0
    before = _tree(out)
    code, _ = _export(capsys, *wh_args, "--format", "yolo", "--out", str(out), "--image-root", str(root),
                      "--overwrite")
    assert code == 1
    assert _tree(out) == before and sorted(os.listdir(tmp_path)) == ["images", "out"]


def test_an_unsafe_file_name_leaves_nothing_at_out(coco_mini, tmp_path):
    doc = {"images": [{"id": 1, "file_name": "000000397133.jpg", "height": 427, "width": 640},
                      {"id": 2, "file_name": "../../escape.jpg", "height": 10, "width": 10}],
           "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    src = tmp_path / "src" / "instances_val2017.json"
    src.parent.mkdir()
    src.write_text(json.dumps(doc))
    run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="evil", workers=1)
    with pytest.raises(ExportError, match="image id=2: .*outside the export directory"):
        export(tmp_path / "out", warehouse=str(tmp_path / "wh"), dataset="evil", image_root=str(coco_mini))
    assert sorted(os.listdir(tmp_path)) == ["src", "wh"]


def test_an_interrupted_export_leaves_nothing(mini_warehouse, coco_mini, tmp_path):
    def interrupt(phase, done, total):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(tmp_path / "out", warehouse=mini_warehouse[0], dataset=mini_warehouse[1], image_root=str(coco_mini),
               threads=1, progress=interrupt)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- files, the real command


@pytest.mark.slow
@pytest.mark.parametrize("command", ["export", "report"])
def test_out_that_is_a_file_is_one_line_with_the_real_command(mini_warehouse, tmp_path, command):
    (tmp_path / "taken").write_text("a file")
    argv = ["--warehouse", mini_warehouse[0], "--dataset", mini_warehouse[1], "--out", "taken"]
    if command == "export":
        argv += ["--format", "coco", "--overwrite"]
    exe = pathlib.Path(sys.executable).with_name("cocolake")
    done = subprocess.run([str(exe), command, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.startswith(f"cocolake {command}: error: --out taken: is a file, not a directory")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert (tmp_path / "taken").read_text() == "a file" and sorted(os.listdir(tmp_path)) == ["taken"]


@pytest.mark.slow
def test_the_real_command_twice_then_overwrite(mini_warehouse, tmp_path):
    argv = [str(pathlib.Path(sys.executable).with_name("cocolake")), "export", "--warehouse", mini_warehouse[0],
            "--dataset", mini_warehouse[1], "--where", GIRAFFES, "--out", "x", "--images", "none"]

    def run(*more):
        return subprocess.run([*argv, *more], cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert run("--format", "coco").returncode == 0
    second = run("--format", "yolo")
    assert second.returncode == 1 and "is not empty" in second.stderr and "Traceback" not in second.stderr
    assert not (tmp_path / "x" / "data.yaml").exists()
    third = run("--format", "yolo", "--overwrite")
    assert third.returncode == 0, third.stderr
    assert (tmp_path / "x" / "data.yaml").is_file() and not (tmp_path / "x" / "annotations").exists()


# ---------------------------------------------------------------------------- fsspec targets


def test_a_parquet_export_to_an_fsspec_url(mini_warehouse, coco_mini, lacking_root, tmp_path):
    wh, ds = mini_warehouse
    fs = fsspec.filesystem("memory")
    url = f"memory://{tmp_path.name}/out"
    path = f"/{tmp_path.name}/out"
    kw = dict(format="parquet", warehouse=wh, dataset=ds, where=GIRAFFES)
    root, _ = lacking_root
    try:
        with pytest.raises(ExportError, match="nothing was exported"):
            export(url, image_root=str(root), **kw)
        assert not fs.exists(path) and fs.ls(f"/{tmp_path.name}", detail=False) == []
        export(url, images="none", **kw)
        assert fs.exists(f"{path}/{MARKER}")
        giraffes = Warehouse(url, ds).read_table("annotations")
        assert giraffes.num_rows and set(giraffes.column("category_id").to_pylist()) == {25}
        with pytest.raises(ExportError, match="is not empty"):
            export(url, images="none", **{**kw, "where": "category_name = 'dog'"})
        export(url, images="none", overwrite=True, **{**kw, "where": "category_name = 'dog'"})
        dogs = Warehouse(url, ds).read_table("annotations")
        assert dogs.num_rows and set(dogs.column("category_id").to_pylist()) == {18}
        assert fs.ls(f"/{tmp_path.name}", detail=False) == [path]
    finally:
        if fs.exists(f"/{tmp_path.name}"):
            fs.rm(f"/{tmp_path.name}", recursive=True)


def test_coco_and_yolo_to_an_fsspec_url_are_refused(mini_warehouse, tmp_path):
    with pytest.raises(ExportError, match="coco exports are written to a local directory"):
        export("memory://somewhere/out", warehouse=mini_warehouse[0], dataset=mini_warehouse[1], images="none")
    assert not fsspec.filesystem("memory").exists("/somewhere")
    assert not pathlib.Path("memory:").exists()

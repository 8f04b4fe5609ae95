"""pipeline/cli/export.py: ``cocolake export`` in-process, and once as the real command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from pipeline.cli import main


def _run(capsys, *argv):
    code = main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_giraffe_subset_as_coco(mini_warehouse, coco_mini, tmp_path, capsys):
    wh, ds = mini_warehouse
    code, out, err = _run(capsys, "--warehouse", wh, "--dataset", ds, "--where", "category_name = 'giraffe'",
                          "--format", "coco", "--out", str(tmp_path), "--image-root", str(coco_mini),
                          "--no-progress")
    assert code == 0, err
    assert "annotations/instances_val2017.json" in out and "2 written" in out
    doc = json.loads((tmp_path / "annotations" / "instances_val2017.json").read_text())
    assert {a["category_id"] for a in doc["annotations"]} == {25}
    for image in doc["images"]:
        assert (tmp_path / "val2017" / image["file_name"]).is_file()


@pytest.mark.parametrize("where", [
    "rle_area(rle_counts, rle_size) > 50000",  # a mask function: registered only when a selector calls it
    "image_id IN (SELECT image_id FROM image_stats WHERE annotations > 10)",  # a view the selector names
])
def test_selectors_calling_mask_functions_and_other_views(mini_warehouse, coco_mini, tmp_path, capsys, where):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    wh, ds = mini_warehouse
    code, out, err = _run(capsys, "--warehouse", wh, "--dataset", ds, "--split", "val2017", "--where", where,
                          "--format", "coco", "--out", str(tmp_path), "--images", "none", "--no-progress")
    assert code == 0, err
    got = json.loads((tmp_path / "annotations" / "instances_val2017.json").read_text())["annotations"]
    gt = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    if where.startswith("rle_area"):
        want = [a["id"] for a in gt.dataset["annotations"] if mask_utils.area(gt.annToRLE(a)) > 50000]
    else:
        want = [a["id"] for a in gt.dataset["annotations"] if len(gt.imgToAnns[a["image_id"]]) > 10]
    capsys.readouterr()
    assert want and sorted(a["id"] for a in got) == sorted(want)


def test_sql_file_split_options_and_yolo(mini_warehouse, tmp_path, capsys):
    wh, ds = mini_warehouse
    query = tmp_path / "pick.sql"
    query.write_text("-- wide images\nSELECT id AS image_id, split FROM images WHERE width > 600; -- landscape\n")
    code, _, err = _run(capsys, "--warehouse", wh, "--dataset", ds, "--sql", str(query), "--split", "val2017",
                        "--format", "yolo", "--out", str(tmp_path / "y"), "--images", "none",
                        "--split-ratio", "0.5", "--seed", "7", "--task", "segment", "--include-crowd")
    assert code == 0, err
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["val"] == "images/val"
    labels = list((tmp_path / "y" / "labels").rglob("*.txt"))
    assert labels and all(len(line.split()) >= 7 for p in labels for line in p.read_text().splitlines())


def test_parquet_with_keep_all(mini_warehouse, tmp_path, capsys):
    wh, ds = mini_warehouse
    code, out, err = _run(capsys, "--warehouse", wh, "--dataset", ds, "--where", "category_name = 'giraffe'",
                          "--keep", "all", "--format", "parquet", "--out", str(tmp_path), "--images", "none")
    assert code == 0, err
    assert (tmp_path / ds / "_manifest.json").is_file()
    assert "captions/split=val2017" in out


def test_malformed_predicate_prints_one_line(mini_warehouse, tmp_path, capsys):
    wh, ds = mini_warehouse
    code, out, err = _run(capsys, "--warehouse", wh, "--dataset", ds, "--where", "area >>> 3", "--format", "coco",
                          "--out", str(tmp_path))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("cocolake export: error: --where 'area >>> 3': ")
    assert "Traceback" not in err


def test_missing_sql_file_and_warehouse(tmp_path, capsys):
    code, _, err = _run(capsys, "--sql", str(tmp_path / "nope.sql"), "--format", "coco", "--out", str(tmp_path))
    assert code == 1 and "--sql" in err and "cannot read" in err
    code, _, err = _run(capsys, "--warehouse", str(tmp_path / "none"), "--format", "coco", "--out", str(tmp_path))
    assert code == 1 and "no warehouse here" in err


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--where", "true", "--sql", "x.sql", "--format", "coco", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["export", "--format", "csv", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "cocolake export: error: argument --format: invalid choice: 'csv'")
    code, _, err = _run(capsys, "--format", "coco", "--out", str(tmp_path), "--split-ratio", "1.5")
    assert code == 1 and "split_ratio: 1.5" in err


@pytest.mark.slow
def test_the_real_command(mini_warehouse, coco_mini, tmp_path):
    wh, ds = mini_warehouse
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "export", "--warehouse", wh, "--dataset", ds, "--format", "coco",
         "--out", str(tmp_path), "--images", "none"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for src in sorted((coco_mini / "annotations").glob("*.json")):
        assert json.loads((tmp_path / "annotations" / src.name).read_text()) == json.loads(src.read_text())

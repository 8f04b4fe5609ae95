"""pipeline/cli/ingest.py and runner.IngestReport: the summary counts what the user counts, per split."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from pycocotools.coco import COCO

from pipeline.query import views
from pipeline.cli import main
from pipeline.ingest.run import run_ingest

KINDS = ("instances", "person_keypoints", "captions")


def _expected(coco_mini, split: str) -> dict[str, int]:
    """The counts of a split from its source files, read by pycocotools."""
    sets = {kind: COCO(str(coco_mini / "annotations" / f"{kind}_{split}.json")) for kind in KINDS}
    images = set().union(*(c.getImgIds() for c in sets.values()))
    categories = set().union(*(c.cats for c in sets.values()))  # captions files have no categories
    return {
        "images": len(images),
        "annotations": len(sets["instances"].getAnnIds()),
        "keypoints": len(sets["person_keypoints"].getAnnIds()),
        "captions": len(sets["captions"].getAnnIds()),
        "categories": len(categories),
        "rejects": 0,
    }


def _rows_summed_over_files(coco_mini, split: str) -> dict[str, int]:
    """What the summary used to show: rows summed over the files (an image once per file)."""
    docs = {k: json.loads((coco_mini / "annotations" / f"{k}_{split}.json").read_text()) for k in KINDS}
    return {"images": sum(len(d["images"]) for d in docs.values()),
            "annotations": len(docs["instances"]["annotations"]) + len(docs["person_keypoints"]["annotations"])}


def _table(out: str, first: str) -> dict[str, dict[str, int]]:
    """The summary table whose header starts with ``first``: {row name: {column: n}}."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    columns = lines[start].split()[1:]
    table = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if not line.startswith("  ") or len(cells) != len(columns) + 1 or not cells[1].isdigit():
            break
        table[cells[0]] = dict(zip(columns, map(int, cells[1:])))
    return table


def _ingest(capsys, tmp_path, *sources, verbose=False) -> str:
    argv = ["-v"] if verbose else []
    argv += ["ingest", "--warehouse", str(tmp_path / "wh"), "--dataset", "d", "--workers", "1", "--no-progress"]
    for s in sources:
        argv += ["--source", str(s)]
    assert main(argv) == 0
    return capsys.readouterr().out


def test_the_summary_counts_images_once_and_keypoints_apart(coco_mini, tmp_path, capsys):
    files = [coco_mini / "annotations" / f"{k}_train2017.json" for k in KINDS]
    out = _ingest(capsys, tmp_path, *files)
    want = _expected(coco_mini, "train2017")
    assert _table(out, "split") == {"train2017": want}
    # rows summed over the files count each image once per file: not what is shown
    old = _rows_summed_over_files(coco_mini, "train2017")
    assert old["images"] == 3 * want["images"] and old["annotations"] == want["annotations"] + want["keypoints"]
    assert "instances_train2017.json" not in out  # per-file rows only with -v
    # the view a user would ask says the same
    con = views.connect(str(tmp_path / "wh"), "d", functions=False, only=["split_summary"])
    summary = con.execute("SELECT images, annotations, keypoint_annotations, captions, categories, rejects "
                          "FROM split_summary WHERE split = 'train2017'").fetchone()
    assert summary == tuple(want.values())


def test_reingesting_one_file_still_shows_the_whole_split(coco_mini, tmp_path, capsys):
    _ingest(capsys, tmp_path, coco_mini / "annotations")
    out = _ingest(capsys, tmp_path, coco_mini / "annotations" / "instances_val2017.json")
    assert "version 2" in out and "1 source file ingested" in out
    assert _table(out, "split") == {"train2017": _expected(coco_mini, "train2017"),
                                    "val2017": _expected(coco_mini, "val2017")}


def test_verbose_adds_the_rows_of_each_file(coco_mini, tmp_path, capsys):
    src = coco_mini / "annotations" / "person_keypoints_val2017.json"
    out = _ingest(capsys, tmp_path, src, verbose=True)
    doc = json.loads(src.read_text())
    per_file = _table(out, "split/source_file")
    assert per_file == {"val2017/person_keypoints_val2017.json": {
        "images": len(doc["images"]), "annotations": len(doc["annotations"]), "keypoints": len(doc["annotations"]),
        "captions": 0, "categories": len(doc["categories"]), "licenses": len(doc["licenses"]), "rejects": 0}}
    # a keypoints-only split: its person instances are the split's annotations
    assert _table(out, "split")["val2017"]["annotations"] == len(doc["annotations"])


def test_the_python_report_holds_the_counts(coco_mini, tmp_path):
    report = run_ingest([str(coco_mini / "annotations" / "captions_val2017.json")], warehouse=str(tmp_path),
                        dataset="d", workers=1)
    doc = json.loads((coco_mini / "annotations" / "captions_val2017.json").read_text())
    assert report.counts == {"val2017": {"images": len(doc["images"]), "annotations": 0, "keypoints": 0,
                                         "captions": len(doc["annotations"]), "categories": 0, "rejects": 0}}
    assert report.file_rows[("val2017", "captions_val2017.json")]["captions"] == len(doc["annotations"])
    assert not any("captions_val2017.json" in line for line in report.lines())
    assert any("captions_val2017.json" in line for line in report.lines(verbose=True))


@pytest.mark.slow
def test_the_real_command_prints_the_counts(coco_mini, tmp_path):
    exe = pathlib.Path(sys.executable).with_name("cocolake")
    done = subprocess.run([str(exe), "ingest", "--source", str(coco_mini / "annotations"), "--warehouse", "wh",
                           "--workers", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _table(done.stdout, "split") == {s: _expected(coco_mini, s) for s in ("train2017", "val2017")}

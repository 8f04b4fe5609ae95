"""The bad-record corpus (tests/cases/bad_records.py) through the real ingest, in both modes.

- ``--on-bad-record error``: one line naming file, record and problem; nothing committed.
- ``--on-bad-record skip``: every valid record lands (the source document is the oracle),
  each bad one is a ``rejects`` row with file, id or index, reason and the raw record.
- whole-file problems fail the file in both modes.
- unusual but valid files round-trip exactly through ingest and the COCO export, and
  their masks equal pycocotools' ``annToRLE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from pycocotools.coco import COCO

from pipeline.cli import main
from pipeline.errors import BadFileError, BadRecordError
from pipeline.export import export
from pipeline.ingest.run import run_ingest
from pipeline.warehouse import Warehouse
from tests.cases.bad_records import ACCEPTED, BAD_FILES, BAD_RECORDS, base, dumps

DATASET = "d"
SECTIONS = {"images": "images", "categories": "categories", "licenses": "licenses"}


def _write(directory: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def _snapshot(root: pathlib.Path) -> dict[str, str]:
    """Every file of the warehouse and a digest of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> pathlib.Path:
    """A warehouse with one committed version (another file of the same split)."""
    root = tmp_path_factory.mktemp("previous")
    src = _write(root / "src", "instances_train2017.json", dumps(base()))
    run_ingest([str(src)], warehouse=str(root / "wh"), dataset=DATASET, split="val2017", workers=1)
    return root / "wh"


@pytest.fixture
def warehouse(previous, tmp_path) -> pathlib.Path:
    wh = tmp_path / "wh"
    shutil.copytree(previous, wh)
    return wh


def _message_pattern(file: str, rest: str) -> str:
    return rf"(?:.*/)?{re.escape(file)}: {rest}"


def _ids_in_order(wh: Warehouse, table: str, source_file: str) -> list:
    rows = [r for r in wh.read_table(table).to_pylist() if r["source_file"] == source_file]
    return [r["id"] for r in sorted(rows, key=lambda r: r["record_index"])]


# ---------------------------------------------------------------------------- bad records


@pytest.mark.parametrize("case", BAD_RECORDS, ids=lambda c: c.name)
def test_error_mode_names_file_record_and_problem_and_commits_nothing(case, warehouse, tmp_path):
    src = _write(tmp_path / "src", case.file, dumps(case.doc))
    before = _snapshot(warehouse)
    with pytest.raises(BadRecordError) as info:
        run_ingest([str(src)], warehouse=str(warehouse), dataset=DATASET, workers=1)
    message = str(info.value)
    assert "\n" not in message
    assert re.match(_message_pattern(case.file, f"{re.escape(case.record)}: {case.problem}"), message), message
    assert _snapshot(warehouse) == before


@pytest.mark.parametrize("case", BAD_RECORDS, ids=lambda c: c.name)
def test_skip_mode_lands_every_valid_record_and_rejects_the_bad_ones(case, tmp_path):
    src = _write(tmp_path / "src", case.file, dumps(case.doc))
    report = run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset=DATASET, workers=1,
                        on_bad_record="skip")
    wh = Warehouse(str(tmp_path / "wh"), DATASET)
    rejects = sorted(wh.read_table("rejects").to_pylist(), key=lambda r: (r["section"] != case.rejects[0][0],
                                                                         r["section"], r["record_index"]))
    assert [(r["section"], r["record_id"], r["record_index"]) for r in rejects] == list(case.rejects)
    assert report.rejects == len(case.rejects)
    assert re.match(case.problem, rejects[0]["reason"]), rejects[0]["reason"]
    for r in rejects:
        assert r["source_file"] == case.file and r["reason"]
        record = case.doc[r["section"]][r["record_index"]]
        # the raw record as the file had it (NaN stays NaN: compare as Python's json writes it)
        assert json.dumps(json.loads(r["raw"]), sort_keys=True) == json.dumps(record, sort_keys=True)
    rejected = {(section, index) for section, _, index in case.rejects}
    for section in ("images", "annotations", "categories", "licenses"):
        want = [rec["id"] for i, rec in enumerate(case.doc.get(section, [])) if (section, i) not in rejected]
        assert _ids_in_order(wh, section, case.file) == want, section


# ---------------------------------------------------------------------------- whole files


@pytest.mark.parametrize("mode", ["error", "skip"])
@pytest.mark.parametrize("case", BAD_FILES, ids=lambda c: c.name)
def test_whole_file_problem_fails_the_file_in_both_modes(case, mode, warehouse, tmp_path):
    src = _write(tmp_path / "src", case.file, case.data)
    before = _snapshot(warehouse)
    with pytest.raises(BadFileError) as info:
        run_ingest([str(src)], warehouse=str(warehouse), dataset=DATASET, workers=1, on_bad_record=mode)
    message = str(info.value)
    assert "\n" not in message
    assert re.match(_message_pattern(case.file, case.problem), message), message
    assert _snapshot(warehouse) == before


def test_a_bad_file_fails_the_run_even_when_the_other_files_are_good(warehouse, tmp_path):
    good = _write(tmp_path / "src", "instances_val2017.json", dumps(base()))
    bad = _write(tmp_path / "src", "captions_val2017.json", b'{"images": [], "annotations": [')
    before = _snapshot(warehouse)
    with pytest.raises(BadFileError, match="captions_val2017.json: .*truncated"):
        run_ingest([str(good), str(bad)], warehouse=str(warehouse), dataset=DATASET, workers=1,
                   on_bad_record="skip")
    assert _snapshot(warehouse) == before


# ---------------------------------------------------------------------------- unusual but valid


def _annotation_masks(doc: dict) -> dict:
    """pycocotools' annToRLE of every annotation that has a mask."""
    doc = json.loads(json.dumps(doc))
    doc["annotations"] = [a for a in doc["annotations"] if a.get("segmentation")]  # not captions
    coco = COCO()
    coco.dataset = doc
    coco.createIndex()
    out = {}
    for ann_id, a in coco.anns.items():
        if a.get("segmentation"):
            rle = coco.annToRLE(a)
            counts = rle["counts"]
            out[ann_id] = (counts.decode() if isinstance(counts, bytes) else counts, list(rle["size"]))
    return out


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_unusual_but_valid_file_round_trips_exactly(case, tmp_path):
    data = case.data if case.data is not None else dumps(case.doc)
    src = _write(tmp_path / "src", case.file, data)
    report = run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset=DATASET, workers=1, split=case.split)
    assert report.rejects == 0
    wh = Warehouse(str(tmp_path / "wh"), DATASET)
    rows = {r["id"]: r for r in wh.read_table("annotations").to_pylist()}
    for ann_id, (counts, size) in _annotation_masks(case.doc).items():
        assert rows[ann_id]["rle_counts"] == counts and rows[ann_id]["rle_size"] == size, ann_id
    export(tmp_path / "out", warehouse=str(tmp_path / "wh"), dataset=DATASET, images="none")
    written = list((tmp_path / "out" / "annotations").iterdir())
    # the export names files <kind>_<split>.json: the source's name when it has that form
    assert len(written) == 1 and (written[0].name == case.file or case.split is not None)
    exported = json.loads(written[0].read_text(encoding="utf-8"))
    assert list(exported) == list(case.doc)
    assert _nan_as_text(exported) == _nan_as_text(case.doc)


def _nan_as_text(value):
    """NaN never equals itself; compare it as a word (and check where it stands)."""
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, list):
        return [_nan_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_as_text(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------- the command


def _bad_polygon_file(tmp_path) -> pathlib.Path:
    return _write(tmp_path / "src", "instances_val2017.json",
                  dumps(base([{"id": 99, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1]]}])))


def test_cli_error_is_one_line_with_a_non_zero_status(tmp_path, capsys):
    src = _bad_polygon_file(tmp_path)
    status = main(["ingest", "--source", str(src), "--warehouse", str(tmp_path / "wh"), "--dataset", DATASET,
                   "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1] == ("cocolake ingest: error: instances_val2017.json: annotation id=99: polygon has 4 coordinates; "
                       "expected an even count >= 6 (pycocotools would read 4 numbers as a box [x, y, width, height])")
    assert not (tmp_path / "wh" / DATASET).exists() or Warehouse(str(tmp_path / "wh"), DATASET).read_manifest() is None


def test_cli_skip_prints_the_totals(tmp_path, capsys):
    src = _bad_polygon_file(tmp_path)
    status = main(["ingest", "--source", str(src), "--warehouse", str(tmp_path / "wh"), "--dataset", DATASET,
                   "--workers", "1", "--no-progress", "--on-bad-record", "skip"])
    out = capsys.readouterr().out
    assert status == 0
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("val2017"))
    assert row == ["val2017", "2", "2", "0", "0", "2", "1"]  # images, annotations, ..., categories, rejects
    assert "1 bad records skipped (see the rejects table)" in out


def _cocolake(*args, cwd) -> subprocess.CompletedProcess:
    exe = pathlib.Path(sys.executable).with_name("cocolake")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_real_command_error_skip_and_bad_file(tmp_path):
    src = _bad_polygon_file(tmp_path)
    common = ["ingest", "--source", str(src), "--warehouse", "wh", "--dataset", DATASET, "--workers", "1",
              "--no-progress"]
    failed = _cocolake(*common, cwd=tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith(
        "cocolake ingest: error: instances_val2017.json: annotation id=99: polygon has 4 coordinates")
    skipped = _cocolake(*common, "--on-bad-record", "skip", cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert "1 bad records skipped" in skipped.stdout
    truncated = _write(tmp_path / "src", "instances_train2017.json", dumps(base())[:-10])
    broken = _cocolake("ingest", "--source", str(truncated), "--warehouse", "wh", "--dataset", DATASET,
                       "--workers", "1", "--no-progress", "--on-bad-record", "skip", cwd=tmp_path)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "instances_train2017.json: the file ends at byte" in broken.stderr
    assert Warehouse(str(tmp_path / "wh"), DATASET).require_manifest().version == 1


def test_every_case_names_an_upstream_report_where_one_exists():
    cases = BAD_RECORDS + BAD_FILES + ACCEPTED
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    for c in cases:
        assert c.upstream is None or re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+",
                                                  c.upstream), c.name

"""Nothing is written outside its target, and user SQL cannot change the warehouse or read other files.

Paths: zip members (sources), image ``file_name`` during ``export --images copy|link`` from
a directory or a zip image root, symlinks planted in an earlier export or in the image directory. SQL: ``cocolake
sql`` and ``cocolake export --where/--sql`` through ``main([...])``, the real code path;
``--allow-external-access`` is the user asking for more.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import zipfile

import pytest

from pipeline.ingest import sources
from pipeline.cli import main
from pipeline.errors import SourceError
from pipeline.export import ExportError, export
from pipeline.ingest.run import run_ingest

DOC = json.dumps({"images": [], "annotations": []}).encode()
IMAGE_NAME = "000000397133.jpg"  # in coco-mini's val2017


def _files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# ---------------------------------------------------------------------------- archive members


# listing the whole archive: the name is refused, or left out as a hidden name
# ("..\\..\\x" is one POSIX name starting with a dot), so nothing is read either way
@pytest.mark.parametrize("member, listed", [
    ("..\\..\\evil_val2017.json", "hidden"),
    ("C:/evil_val2017.json", "refused"),
    ("c:evil_val2017.json", "refused"),
    ("\\evil_val2017.json", "refused"),
    ("ok/../../evil_val2017.json", "refused"),
])
def test_unsafe_zip_member_names_are_refused(tmp_path, member, listed):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(member, DOC)
    before = _files(tmp_path)
    refused = re.escape(f"{archive}: member {member!r}: absolute path or '..' in the name; refusing it")
    with pytest.raises(SourceError, match=f"^{refused}$"):
        sources.resolve([f"zip://{member}::{archive}"], cache_dir=str(tmp_path / "cache"))
    with pytest.raises(SourceError, match=f"^{refused}$"):
        sources.resolve([str(archive)], cache_dir=str(tmp_path / "cache"), members={str(archive): [member]})
    if listed == "refused":
        with pytest.raises(SourceError, match=f"^{refused}$"):
            sources.resolve([str(archive)], cache_dir=str(tmp_path / "cache"))
    else:
        assert listed == "hidden" and sources.resolve([str(archive)], cache_dir=str(tmp_path / "cache")) == []
    assert _files(tmp_path) == before


# ---------------------------------------------------------------------------- image file names


@pytest.fixture
def evil_dataset(tmp_path):
    """A warehouse whose second image is named by the test (``make(file_name)``)."""

    def make(file_name: str) -> str:
        doc = {"images": [{"id": 1, "file_name": IMAGE_NAME, "height": 427, "width": 640},
                          {"id": 2, "file_name": file_name, "height": 10, "width": 10}],
               "annotations": [], "categories": [{"id": 1, "name": "x"}]}
        src = tmp_path / "src" / "instances_val2017.json"
        src.parent.mkdir(exist_ok=True)
        src.write_text(json.dumps(doc))
        run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="evil", workers=1)
        return str(tmp_path / "wh")

    return make


@pytest.mark.parametrize("mode", ["copy", "link"])
@pytest.mark.parametrize("bad", ["..\\..\\escape.jpg", "val2017/../../../escape.jpg", "/tmp/escape.jpg",
                                 "D:\\escape.jpg"])
def test_export_never_writes_a_file_name_outside_out(evil_dataset, coco_mini, tmp_path, mode, bad):
    wh = evil_dataset(bad)
    with pytest.raises(ExportError, match="image id=2: file_name .* outside the export directory"):
        export(tmp_path / "out", warehouse=wh, dataset="evil", images=mode, image_root=str(coco_mini))
    assert not list(tmp_path.rglob("*.jpg")) and not os.path.exists("/tmp/escape.jpg")


def test_a_zip_image_root_with_a_zip_slip_member_is_not_followed(evil_dataset, coco_mini, tmp_path):
    """The archive holds a member under the unsafe name too: the name is refused before any lookup."""
    root = tmp_path / "val2017.zip"
    with zipfile.ZipFile(root, "w") as z:
        z.write(coco_mini / "val2017" / IMAGE_NAME, f"val2017/{IMAGE_NAME}")
        z.writestr("val2017/../../escape.jpg", b"evil")
        z.writestr("../escape.jpg", b"evil")
    wh = evil_dataset("../escape.jpg")
    with pytest.raises(ExportError, match="contains '..'"):
        export(tmp_path / "out", warehouse=wh, dataset="evil", image_root=str(root))
    assert not list(tmp_path.rglob("escape.jpg"))


def test_a_symlinked_directory_in_the_image_directory_is_not_written_through(coco_mini, tmp_path):
    """The export directory is new, but the guard holds should a link appear in it while it is written."""
    from pipeline.export.images import ImageJob, copy_all

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out" / "val2017").mkdir(parents=True)
    (tmp_path / "out" / "val2017" / "sub").symlink_to(outside)
    jobs = [ImageJob(1, "val2017", "val2017", IMAGE_NAME), ImageJob(2, "val2017", "val2017", "sub/b.jpg")]
    with pytest.raises(ExportError, match=r"image id=2: 'sub/b.jpg' resolves to .*outside"):
        copy_all(jobs, str(tmp_path / "out"), image_root=str(coco_mini))
    assert _files(outside) == [] and not (tmp_path / "out" / "val2017" / IMAGE_NAME).exists()


@pytest.mark.parametrize("planted", ["destination", "temporary file", "directory"])
def test_links_planted_in_an_earlier_export_are_replaced_not_written_through(mini_warehouse, coco_mini, tmp_path,
                                                                             planted):
    wh, ds = mini_warehouse
    kw = dict(warehouse=wh, dataset=ds, splits=["val2017"], where=f"file_name = '{IMAGE_NAME}'",
              image_root=str(coco_mini))
    out = tmp_path / "out"
    export(out, **kw)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep me")
    target = out / "val2017" / IMAGE_NAME
    if planted == "directory":
        shutil.rmtree(out / "val2017")
        (out / "val2017").symlink_to(victim)
    else:
        target.unlink()
        (target if planted == "destination" else target.with_name(IMAGE_NAME + ".part")).symlink_to(
            victim / "keep.txt")
    export(out, overwrite=True, **kw)
    assert _files(victim) == ["keep.txt"] and (victim / "keep.txt").read_text() == "keep me"
    assert not (out / "val2017").is_symlink() and not target.is_symlink()
    assert target.read_bytes() == (coco_mini / "val2017" / IMAGE_NAME).read_bytes()
    assert not target.with_name(IMAGE_NAME + ".part").exists()


# ---------------------------------------------------------------------------- cocolake sql


@pytest.fixture(scope="module")
def wh_args(mini_warehouse):
    return ["--warehouse", mini_warehouse[0], "--dataset", mini_warehouse[1]]


@pytest.fixture
def outside(tmp_path):
    """A CSV and a Parquet file outside the warehouse."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "ids.csv").write_text("annotation_id\n2232\n")
    pq.write_table(pa.table({"annotation_id": [2232]}), tmp_path / "ids.parquet")
    return tmp_path


def _one_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("statement", [
    "CREATE TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW images AS SELECT 1 AS id",
    "INSERT INTO raw_images SELECT * FROM raw_images",
    "ATTACH '{dir}/x.duckdb' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "COPY (SELECT 1) TO '{dir}/x.csv'",
    "EXPORT DATABASE '{dir}/dump'",
    "SELECT 1; COPY (SELECT 1) TO '{dir}/x.csv'",
])
def test_sql_cannot_change_anything(capsys, wh_args, mini_warehouse, tmp_path, statement):
    before = _files(tmp_path)
    warehouse_before = _files(pathlib.Path(mini_warehouse[0]))
    err = _one_error(capsys, ["sql", *wh_args, statement.format(dir=tmp_path)])
    assert "only read-only queries run here" in err
    assert _files(tmp_path) == before
    assert _files(pathlib.Path(mini_warehouse[0])) == warehouse_before


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('{dir}/ids.csv')",
    "SELECT * FROM '{dir}/ids.csv'",
    "SELECT * FROM read_parquet('{dir}/ids.parquet')",
    "SELECT * FROM parquet_metadata('{dir}/ids.parquet')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM glob('{dir}/*')",
    "SELECT * FROM read_json('{warehouse}/_manifest.json')",
    "SELECT * FROM query('SELECT * FROM read_csv(''{dir}/ids.csv'')')",
    "SELECT * FROM read_csv('http://127.0.0.1:9/ids.csv')",
])
def test_sql_cannot_read_outside_the_warehouse_parts(capsys, wh_args, mini_warehouse, outside, query):
    text = query.format(dir=outside, warehouse=f"{mini_warehouse[0]}/{mini_warehouse[1]}")
    err = _one_error(capsys, ["sql", *wh_args, text])
    assert "Permission Error" in err


def test_sql_reads_outside_when_asked(capsys, wh_args, outside):
    code = main(["sql", *wh_args, "--allow-external-access",
                 f"SELECT a.id FROM annotations AS a JOIN read_csv('{outside}/ids.csv') AS i ON a.id = i.annotation_id"])
    assert code == 0 and capsys.readouterr().out.splitlines() == ["id", "2232"]


# ---------------------------------------------------------------------------- cocolake export


@pytest.mark.parametrize("selector", [
    ["--where", "id IN (SELECT annotation_id FROM read_csv('{dir}/ids.csv'))"],
    ["--where", "length((SELECT content FROM read_text('/etc/hostname'))) > 0"],
    ["--where", "(SELECT count(*) FROM glob('{dir}/*')) > 0"],
    ["--sql", "{dir}/picks.sql"],
])
def test_export_selectors_cannot_read_outside_the_warehouse(capsys, wh_args, outside, selector):
    (outside / "picks.sql").write_text(f"SELECT annotation_id FROM read_parquet('{outside}/ids.parquet')\n")
    argv = ["export", *wh_args, "--format", "coco", "--out", str(outside / "out"), "--images", "none"]
    err = _one_error(capsys, argv + [s.format(dir=outside) for s in selector])
    assert "Permission Error" in err
    assert not (outside / "out" / "annotations").exists()


@pytest.mark.parametrize("where", [
    "true; COPY (SELECT 1) TO '{dir}/x.csv'",
    "true) UNION ALL SELECT 1, 1 --",
    "id IN (SELECT * FROM query('COPY (SELECT 1) TO ''{dir}/x.csv'''))",
])
def test_export_where_cannot_write(capsys, wh_args, tmp_path, where):
    argv = ["export", *wh_args, "--format", "coco", "--out", str(tmp_path / "out"), "--images", "none",
            "--where", where.format(dir=tmp_path)]
    _one_error(capsys, argv)
    assert not (tmp_path / "x.csv").exists()


def test_export_reads_a_list_of_ids_when_asked(capsys, wh_args, outside):
    argv = ["export", *wh_args, "--format", "coco", "--out", str(outside / "out"), "--images", "none",
            "--where", f"id IN (SELECT annotation_id FROM read_csv('{outside}/ids.csv'))"]
    assert main(argv + ["--allow-external-access"]) == 0
    written = sorted((outside / "out" / "annotations").glob("*.json"))
    assert [a["id"] for f in written for a in json.loads(f.read_text())["annotations"]] == [2232]


# ---------------------------------------------------------------------------- cocolake evaluate


@pytest.fixture(scope="module")
def evaluated(mini_warehouse, coco_mini, tmp_path_factory):
    """A copy of the mini warehouse with a run of detections (the val2017 ground truth's boxes)."""
    import shutil

    from pipeline.evaluate import detections as results

    root = tmp_path_factory.mktemp("eval")
    shutil.copytree(f"{mini_warehouse[0]}/{mini_warehouse[1]}", root / "d")
    gt = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in gt["annotations"][:40]]
    (root / "dets.json").write_text(json.dumps(dets))
    results.run_ingest_results(str(root / "dets.json"), run="m1", warehouse=str(root), dataset="d")
    return ["evaluate", "--run", "m1", "--warehouse", str(root), "--dataset", "d", "--no-save-matches"]


@pytest.mark.parametrize("where", [
    "id IN (SELECT annotation_id FROM read_csv('{dir}/ids.csv'))",
    "length((SELECT content FROM read_text('/etc/hostname'))) > 0",
])
def test_evaluate_where_cannot_read_outside_the_warehouse(capsys, evaluated, outside, where):
    err = _one_error(capsys, evaluated + ["--where", where.format(dir=outside)])
    assert "Permission Error" in err
    assert main(evaluated + ["--where", where.format(dir=outside), "--allow-external-access"]) == 0


@pytest.mark.parametrize("where", [
    "true; COPY (SELECT 1) TO '{dir}/x.csv'",
    "true) UNION ALL SELECT 1, 1 --",
])
def test_evaluate_where_cannot_write(capsys, evaluated, tmp_path, where):
    err = _one_error(capsys, evaluated + ["--where", where.format(dir=tmp_path)])
    assert "--where" in err
    assert not (tmp_path / "x.csv").exists()

"""``cocolake sql | views | query | check``: in-process through ``main([...])``, plus the
real command and a plain DuckDB client (no cocolake imported) in subprocesses."""

from __future__ import annotations

import csv
import io
import json
import pathlib
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wh(mini_warehouse):
    return ["--warehouse", mini_warehouse[0], "--dataset", mini_warehouse[1]]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ sql
def test_sql_csv_to_stdout_with_header(capsys, wh):
    code, out, err = run(capsys, "sql", *wh, "SELECT split, count(*) AS n FROM annotations GROUP BY split ORDER BY split")
    assert code == 0 and err == ""
    assert list(csv.reader(io.StringIO(out))) == [["split", "n"], ["train2017", "739"], ["val2017", "624"]]


def test_sql_formats_and_out(capsys, wh, tmp_path):
    query = "SELECT id, bbox, area_bucket FROM annotations_enriched WHERE id IN (2232, 3253) ORDER BY id"
    code, out, _ = run(capsys, "sql", *wh, query, "--format", "json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [2232, 3253] and len(rows[0]["bbox"]) == 4
    code, out, _ = run(capsys, "sql", *wh, query, "--format", "table")
    assert out.splitlines()[0].split() == ["id", "bbox", "area_bucket"] and out.rstrip().endswith("(2 rows)")
    for name, fmt in (("r.parquet", None), ("r.csv", None), ("r.json", "json"), ("r.txt", "table")):
        args = ["--out", str(tmp_path / name)] + (["--format", fmt] if fmt else [])
        code, out, _ = run(capsys, "sql", *wh, query, *args)
        assert code == 0 and out == ""
    assert pq.read_table(tmp_path / "r.parquet").column("id").to_pylist() == [2232, 3253]
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == "id,bbox,area_bucket"
    assert (tmp_path / "r.csv").read_text().splitlines()[1].startswith('2232,"[')


def test_sql_file_and_mask_functions(capsys, wh, tmp_path, monkeypatch):
    q = tmp_path / "q.sql"
    q.write_text("-- how many masks match their stored area\n"
                 "SELECT count(*) FILTER (WHERE rle_area(rle_counts, rle_size) = mask_area) AS same, count(*) AS n\n"
                 "FROM annotations;\n")
    code, out, _ = run(capsys, "sql", *wh, "--file", str(q))
    assert code == 0 and out.splitlines() == ["same,n", "1363,1363"]
    monkeypatch.setattr("sys.stdin", io.StringIO(q.read_text()))
    code, out, _ = run(capsys, "sql", *wh, "--file", "-")
    assert code == 0 and out.splitlines() == ["same,n", "1363,1363"]


def test_sql_cannot_write_or_read_outside(capsys, wh, tmp_path):
    target = tmp_path / "x.csv"
    code, out, err = run(capsys, "sql", *wh, f"COPY (SELECT 1) TO '{target}'")
    assert code == 1 and out == ""
    assert err.startswith("cocolake sql: error: only read-only queries run here") and err.count("\n") == 1
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    code, _, err = run(capsys, "sql", *wh, f"SELECT * FROM read_csv('{secret}')")
    assert code == 1 and "Permission Error" in err and err.count("\n") == 1
    code, _, err = run(capsys, "sql", *wh, f"SELECT * FROM '{ROOT / 'pyproject.toml'}'")
    assert code == 1 and err.count("\n") == 1
    assert not target.exists()
    # the flag lifts the guard
    code, _, _ = run(capsys, "sql", *wh, "--allow-external-access", f"COPY (SELECT 42 AS x) TO '{target}'")
    assert code == 0 and target.read_text().splitlines() == ["x", "42"]
    code, out, _ = run(capsys, "sql", *wh, "--allow-external-access", f"SELECT * FROM read_csv('{secret}')")
    assert out.splitlines() == ["a", "1"]


def test_sql_usage_errors(capsys, wh, tmp_path):
    code, _, err = run(capsys, "sql", *wh)
    assert code == 1 and "give the SQL as an argument or with --file" in err
    code, _, err = run(capsys, "sql", *wh, "SELECT 1", "--format", "parquet")
    assert code == 1 and "--format parquet needs --out FILE" in err
    code, _, err = run(capsys, "sql", "--warehouse", str(tmp_path), "--dataset", "none", "SELECT 1")
    assert code == 1 and "no warehouse here" in err
    code, _, err = run(capsys, "sql", *wh, "SELECT nope FROM images")
    assert code == 1 and err.startswith("cocolake sql: error: Binder Error") and err.count("\n") == 1


def test_sql_takes_warehouse_from_config(capsys, mini_warehouse, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {mini_warehouse[1]}\nwarehouse: {mini_warehouse[0]}\nsources: [x.json]\n")
    code, out, _ = run(capsys, "sql", "--config", str(cfg), "SELECT count(*) AS n FROM images")
    assert code == 0 and out.splitlines() == ["n", "159"]


# ------------------------------------------------------------------ repeated column names
def readme_rle_iou_query() -> str:
    """The README's own ``rle_iou`` example (two columns named ``id``)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", readme, flags=re.S)
    return next(b for b in blocks if "rle_iou(a.rle_counts" in b)


@pytest.fixture(scope="module")
def iou_rows(mini_warehouse):
    """The README query's rows with the names given by hand: what every format must hold."""
    from pipeline.query.views import connect, run_sql

    query = readme_rle_iou_query()
    assert query.startswith("-- ") and "SELECT a.image_id, a.id, b.id, rle_iou(" in query
    con = connect(*mini_warehouse)
    try:
        table = run_sql(con, query.replace("a.id, b.id,", "a.id AS id, b.id AS id_1,"))
    finally:
        con.close()
    assert table.column_names == ["image_id", "id", "id_1", "iou"] and table.num_rows == 10
    return table.to_pylist()


def parse(fmt: str, text: str, path: pathlib.Path) -> tuple[list[str], list[list[str]]]:
    """Column names and rows (as text) of a result written in ``fmt``."""
    if fmt == "csv":
        header, *rows = list(csv.reader(io.StringIO(text)))
        return header, rows
    if fmt == "json":
        objs = json.loads(text)
        return list(objs[0]), [[str(v) for v in o.values()] for o in objs]
    if fmt == "table":
        header, rule, *rows, count = text.splitlines()
        assert count == "(10 rows)" and set(rule.replace(" ", "")) == {"-"}
        return header.split(), [r.split() for r in rows]
    table = pq.read_table(path)
    return table.column_names, [[str(v) for v in r.values()] for r in table.to_pylist()]


@pytest.mark.parametrize("fmt", ["csv", "json", "table", "parquet"])
def test_repeated_column_names_come_out_whole_in_every_format(capsys, wh, tmp_path, iou_rows, fmt):
    out_file = tmp_path / f"r.{fmt}"
    extra = ["--out", str(out_file)] if fmt == "parquet" else []
    code, out, err = run(capsys, "sql", *wh, readme_rle_iou_query(), "--format", fmt, *extra)
    assert code == 0 and err == ""
    names, rows = parse(fmt, out, out_file)
    assert names == ["image_id", "id", "id_1", "iou"]
    assert rows == [[str(v) for v in r.values()] for r in iou_rows]


def test_repeated_names_are_made_unique_as_duckdb_does(tmp_path):
    """DuckDB's own clients are the oracle: the names of ``COPY ... TO`` and ``fetchnumpy``."""
    import duckdb

    from pipeline.cli.common import unique_names

    query = ('SELECT 1 AS id, 2 AS id, 3 AS id_1, 4 AS "ID", 5 AS id, 6 AS x, 7 AS "X", 8 AS x_1, '
             '9 AS "X_1", 10 AS y')
    con = duckdb.connect()
    names = con.sql(query).columns
    assert names.count("id") == 3  # the raw result repeats them
    con.execute(f"COPY ({query}) TO '{tmp_path / 'x.csv'}'")
    copied = (tmp_path / "x.csv").read_text().splitlines()[0].split(",")
    assert unique_names(names) == copied == list(con.sql(query).fetchnumpy())
    assert unique_names(["id", "id", "id"]) == ["id", "id_1", "id_2"]
    assert unique_names(["a", "b"]) == ["a", "b"]


def test_check_tables_keep_repeated_columns():
    import pyarrow as pa

    from pipeline.cli.common import render_table

    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["id", "id"])
    assert render_table(table).splitlines() == ["id  id_1", "--  ----", " 1     2", "(1 row)"]


@pytest.mark.parametrize(("query", "hint"), [
    ("SELECT idd FROM annotations AS a JOIN images AS b ON a.image_id = b.id", 'Candidate bindings: "a.id", "b.id"'),
    ("SELECT count(*) FROM imagez", 'Did you mean "images"?'),
    ("SELECT rle_area(rle_counts) FROM annotations", "Candidate functions: rle_area(VARCHAR, INTEGER[]) -> BIGINT"),
    ("SELECT id FROM annotations AS a JOIN images AS b ON a.image_id = b.id", "(use: 'a.id' or 'b.id')"),
])
def test_sql_errors_keep_duckdbs_hints_on_one_line(capsys, wh, query, hint):
    code, out, err = run(capsys, "sql", *wh, query)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("cocolake sql: error: ") and hint in err


# ------------------------------------------------------------------ views --db
PLAIN_CLIENT = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("SELECT sum(annotations) FROM category_stats").fetchall()[0][0])
print(con.execute("SELECT count(*) FROM annotations_enriched WHERE area_bucket = 'small'").fetchall()[0][0])
print(con.execute("SELECT sum(kp_visible_count(keypoints)) FROM keypoints").fetchall()[0][0])
try:
    con.execute("SELECT rle_area(rle_counts, rle_size) FROM annotations LIMIT 1")
except duckdb.Error as err:
    print("no rle_area")
print("pipeline" in sys.modules)
"""


def test_views_db_opens_in_a_plain_client(capsys, wh, mini_warehouse, tmp_path):
    db = tmp_path / "mini.duckdb"
    code, out, _ = run(capsys, "views", *wh, "--db", str(db))
    assert code == 0 and "category_stats" in out and "annotations_enriched" in out
    code, _, _ = run(capsys, "views", *wh, "--db", str(db))  # replaces its own file
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["mini.duckdb"]
    done = subprocess.run([sys.executable, "-c", PLAIN_CLIENT, str(db)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    from pipeline.query.views import connect

    con = connect(*mini_warehouse)
    expected = [
        con.execute("SELECT count(*) FROM annotations").fetchall()[0][0],
        con.execute("SELECT count(*) FROM annotations_enriched WHERE area_bucket = 'small'").fetchall()[0][0],
        con.execute("SELECT sum(kp_visible_count(keypoints)) FROM keypoints").fetchall()[0][0],
    ]
    assert done.stdout.split() == [str(v) for v in expected] + ["no", "rle_area", "False"]


def test_views_refuses_to_replace_other_files(capsys, wh, tmp_path):
    precious = tmp_path / "notes.duckdb"
    precious.write_text("not a database")
    code, _, err = run(capsys, "views", *wh, "--db", str(precious))
    assert code == 1 and "is not a DuckDB database; not replacing it" in err
    assert precious.read_text() == "not a database"


# ------------------------------------------------------------------ query
def test_query_lists_and_runs(capsys, wh, tmp_path):
    code, out, _ = run(capsys, "query")
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and "class_balance" in names and "category_cooccurrence" in names
    code, out, _ = run(capsys, "query", *wh, "class_balance")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["split", "category_id", "category_name"]
    assert out.splitlines()[2].split()[:3] == ["train2017", "1", "person"]
    code, out, _ = run(capsys, "query", *wh, "boxes_per_image", "--format", "csv")
    assert out.splitlines()[0] == "split,boxes,images,percent_of_images"
    code, _, err = run(capsys, "query", *wh, "nope")
    assert code == 1 and "no query named 'nope'" in err


# ------------------------------------------------------------------ check
def test_check_passes_on_coco_mini(capsys, wh):
    code, out, _ = run(capsys, "check", *wh)
    assert code == 0
    assert out.splitlines()[0] == "PASS  area_mismatch" and out.splitlines()[-1] == "10 of 10 checks passed"


def test_check_fails_with_a_table(capsys, tmp_path):
    """Data the ingest accepts but the checks flag: a box past the edge, an area far off."""
    from pipeline.ingest.run import run_ingest

    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}],
           "categories": [{"id": 1, "name": "cat"}],
           "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 5000.0,
                            "bbox": [90, 10, 30, 10], "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]}]}
    (tmp_path / "instances_train2017.json").write_text(json.dumps(doc))
    run_ingest([str(tmp_path / "instances_train2017.json")], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)
    code, out, _ = run(capsys, "check", "--warehouse", str(tmp_path / "wh"), "--dataset", "d")
    assert code == 1
    lines = out.splitlines()
    assert "FAIL  area_mismatch" in lines[0] and lines[0].endswith("1 row")
    assert any(ln.split()[:4] == ["train2017", "instances_train2017.json", "7", "1"] for ln in lines)
    assert lines[-1] == "8 of 10 checks passed; failed: area_mismatch, bbox_outside_image"
    code, out, _ = run(capsys, "check", "--warehouse", str(tmp_path / "wh"), "--dataset", "d", "degenerate_bbox")
    assert code == 0 and out.splitlines() == ["PASS  degenerate_bbox", "1 of 1 checks passed"]


def test_check_list(capsys):
    code, out, _ = run(capsys, "check", "--list")
    assert code == 0 and out.splitlines()[0].startswith("area_mismatch ")


# ------------------------------------------------------------------ the real command
@pytest.mark.slow
def test_cocolake_sql_end_to_end(wh, tmp_path):
    exe = pathlib.Path(sys.executable).parent / "cocolake"
    done = subprocess.run([str(exe), "sql", *wh, "SELECT count(*) AS n FROM images"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and done.stdout.splitlines() == ["n", "159"] and done.stderr == ""
    done = subprocess.run([str(exe), "sql", *wh, f"COPY images TO '{tmp_path / 'x.parquet'}'"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "json", "table", "parquet"])
def test_cocolake_sql_readme_rle_iou_example_in_every_format(wh, tmp_path, iou_rows, fmt):
    exe = pathlib.Path(sys.executable).parent / "cocolake"
    out_file = tmp_path / f"r.{fmt}"
    extra = ["--out", str(out_file)] if fmt == "parquet" else []
    done = subprocess.run([str(exe), "sql", *wh, readme_rle_iou_query(), "--format", fmt, *extra],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    names, rows = parse(fmt, done.stdout, out_file)
    assert names == ["image_id", "id", "id_1", "iou"]
    assert rows == [[str(v) for v in r.values()] for r in iou_rows]


@pytest.mark.slow
def test_cocolake_sql_error_keeps_the_candidate_bindings(wh, tmp_path):
    exe = pathlib.Path(sys.executable).parent / "cocolake"
    done = subprocess.run([str(exe), "sql", *wh, "SELECT idd FROM imagez"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert 'Did you mean "images"?' in done.stderr
    done = subprocess.run([str(exe), "sql", *wh, "SELECT idd FROM images"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("cocolake sql: error: Binder Error: Referenced column \"idd\" not found")
    assert 'Candidate bindings: "id"' in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_sum_of_integers_comes_out_as_an_exact_integer(capsys, wh, mini_warehouse, fmt):
    # sum(BIGINT) is a HUGEINT in DuckDB, which its Arrow conversion turns into a double
    big = 2 ** 62
    sql = f"SELECT sum(annotations) AS n, sum(CAST({big} AS BIGINT)) + {big} AS big FROM category_stats"
    code, out, err = run(capsys, "sql", *wh, sql, "--format", fmt)
    assert code == 0 and err == ""
    from pipeline.query import views

    n, categories = views.connect(*mini_warehouse).execute(
        "SELECT sum(annotations), count(*) FROM category_stats").fetchone()
    want = [str(n), str(big * categories + big)]
    if fmt == "csv":
        assert list(csv.reader(io.StringIO(out))) == [["n", "big"], want]
    elif fmt == "json":
        assert json.loads(out) == [{"n": n, "big": big * categories + big}]
    else:
        assert out.splitlines()[2].split() == want

"""``cocolake views --db`` read by DuckDB 1.x clients: the oldest 1.x release the README
promises (1.1) and the newest, each installed from the package index into a directory of
its own, run by a Python that sees nothing else (no site-packages: no cocolake, not our
DuckDB), open the file read-only and get the rows our own connection gets."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from pipeline.cli import main

# DuckDB 1.0's storage format: what `views --db` writes (pipeline/cli/views.py STORAGE_VERSION)
DUCKDB_1_0_STORAGE = 64

CLIENTS = ["duckdb>=1.1,<1.2", "duckdb>=1.1,<2"]

CLIENT = """
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
views = [r[0] for r in con.execute(
    "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall()]
counts = {v: con.execute(f'SELECT count(*) FROM "{v}"').fetchall()[0][0] for v in views}
small = con.execute("SELECT count(*) FROM annotations_enriched WHERE area_bucket = 'small'").fetchall()[0][0]
visible = con.execute("SELECT sum(kp_visible_count(keypoints)) FROM keypoints").fetchall()[0][0]
try:
    con.execute("SELECT rle_area(rle_counts, rle_size) FROM annotations LIMIT 1")
    udf = True
except duckdb.Error:
    udf = False
try:
    con.execute("CREATE TABLE t (x INTEGER)")
    writable = True
except duckdb.Error:
    writable = False
print(json.dumps({"version": duckdb.__version__, "from": duckdb.__file__, "counts": counts, "small": small, "visible": visible,
                  "udf": udf, "writable": writable, "pipeline": "pipeline" in sys.modules}))
"""

# what pip prints when it cannot reach the package index (no network, no proxy, no DNS)
_UNREACHABLE = ("from versions: none", "NewConnectionError", "Network is unreachable", "Max retries exceeded",
                "Temporary failure in name resolution", "ConnectTimeout", "ProxyError")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _plain_env() -> dict:
    """The environment without our PYTHONPATH: the client must not see this checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="session")
def duckdb_client(tmp_path_factory):
    """A function: pip requirement -> (the command that runs a Python holding just that
    DuckDB, its environment); each installed once.

    ``pip install --target`` and ``python -S`` with only that directory on the path, rather
    than a new venv: the same isolation (``-S``: no site-packages; the working directory is
    a temporary one) for half the time (a venv's own pip takes ~8 s to set up).
    """
    made: dict[str, pathlib.Path] = {}

    def python_with(spec: str) -> tuple[list[str], dict]:
        if spec not in made:
            where = tmp_path_factory.mktemp("duckdb-client")
            done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                   "--no-deps", "--target", str(where), spec],
                                  capture_output=True, text=True, timeout=900, env=_plain_env())
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                if any(m in done.stderr for m in _UNREACHABLE) and not _in_ci():
                    pytest.skip(f"pip cannot reach the package index to install {spec!r}: {last}")
                pytest.fail(f"pip install {spec!r} failed:\n{done.stderr[-3000:]}")
            made[spec] = where
        return [sys.executable, "-S", "-c"], {**_plain_env(), "PYTHONPATH": str(made[spec])}

    return python_with


@pytest.fixture(scope="module")
def views_db(mini_warehouse, tmp_path_factory) -> pathlib.Path:
    """The database the real command writes with its default options, from outside the repository."""
    out = tmp_path_factory.mktemp("views-db")
    exe = pathlib.Path(sys.executable).parent / "cocolake"
    done = subprocess.run([str(exe), "views", "--warehouse", mini_warehouse[0], "--dataset", mini_warehouse[1],
                           "--db", "coco.duckdb"], capture_output=True, text=True, cwd=out, timeout=300)
    assert done.returncode == 0, done.stderr
    return out / "coco.duckdb"


def test_views_db_is_written_in_duckdb_1_0_storage_format(capsys, mini_warehouse, tmp_path):
    db = tmp_path / "v.duckdb"
    assert main(["views", "--warehouse", mini_warehouse[0], "--dataset", mini_warehouse[1], "--db", str(db)]) == 0
    capsys.readouterr()
    header = db.read_bytes()[:20]
    assert header[8:12] == b"DUCK" and int.from_bytes(header[12:20], "little") == DUCKDB_1_0_STORAGE


@pytest.mark.slow
@pytest.mark.parametrize("spec", CLIENTS)
def test_a_duckdb_1_client_opens_the_views_db_read_only(duckdb_client, views_db, mini_warehouse, spec, tmp_path):
    command, env = duckdb_client(spec)
    done = subprocess.run([*command, CLIENT, str(views_db)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["version"].startswith("1.1." if "<1.2" in spec else "1.")
    assert pathlib.Path(got["from"]).parents[1] == pathlib.Path(env["PYTHONPATH"])  # not our DuckDB

    from pipeline.query.views import connect

    con = connect(*mini_warehouse)
    try:
        ours = {v: con.execute(f'SELECT count(*) FROM "{v}"').fetchall()[0][0] for v in got["counts"]}
        small = con.execute("SELECT count(*) FROM annotations_enriched WHERE area_bucket = 'small'").fetchall()[0][0]
        visible = con.execute("SELECT sum(kp_visible_count(keypoints)) FROM keypoints").fetchall()[0][0]
    finally:
        con.close()
    assert got["counts"]["annotations_enriched"] == ours["annotations_enriched"] == 1363
    assert got["counts"] == ours and {"images", "category_stats", "split_summary"} <= set(ours)
    assert (got["small"], got["visible"]) == (small, visible) and visible > 0
    # the Python mask functions live in cocolake only; the file opened read-only stays so
    assert got["udf"] is False and got["writable"] is False and got["pipeline"] is False

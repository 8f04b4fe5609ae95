"""The SQL files ship with the package: pyproject.toml puts the top-level ``sql/`` into wheels
and sdists as ``pipeline/sql``, cocolake finds it there (or beside a checkout's package),
and a missing or empty SQL directory is an error that names it.

Building and installing a real wheel (which needs the package index) is ``.ci/smoke``'s job.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from pipeline.errors import QueryError
from pipeline.query.views import SQL_DIR, connect, load_sql_dir

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_missing_or_empty_sql_directory_is_an_error_naming_it(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(QueryError, match=f"^{absent}: SQL directory not found"):
        load_sql_dir(absent)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("no SQL here\n")
    with pytest.raises(QueryError, match=f"^{empty}: SQL directory holds no .sql file"):
        load_sql_dir(empty)


def test_connect_without_views_names_the_directory(mini_warehouse, tmp_path):
    (tmp_path / "views").mkdir()
    with pytest.raises(QueryError, match=f"^{tmp_path / 'views'}: SQL directory holds no .sql file"):
        connect(*mini_warehouse, sql_dir=tmp_path)


def test_checkout_reads_the_top_level_sql_directory():
    assert SQL_DIR == ROOT / "sql"
    for sub in ("views", "functions", "checks", "queries"):
        assert load_sql_dir(SQL_DIR / sub), sub


def _installed_copy(site: pathlib.Path) -> pathlib.Path:
    """The package as a wheel lays it out in site-packages, without its SQL."""
    shutil.copytree(ROOT / "pipeline", site / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _cocolake(site: pathlib.Path, *args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_installed_package_reads_its_package_data_and_fails_clearly_without_it(tmp_path):
    site = _installed_copy(tmp_path / "site")
    # an unrelated top-level `sql` directory in site-packages is not cocolake's
    (site / "sql" / "checks").mkdir(parents=True)
    (site / "sql" / "checks" / "not_ours.sql").write_text("SELECT 1\n")
    shutil.copytree(ROOT / "sql", site / "pipeline" / "sql")
    listed = _cocolake(site, "check", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == sorted(p.stem for p in (ROOT / "sql" / "checks").glob("*.sql"))

    shutil.rmtree(site / "pipeline" / "sql")
    shutil.rmtree(site / "sql")
    failed = _cocolake(site, "check", "--list", cwd=tmp_path)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.splitlines() == [
        f"cocolake check: error: {site / 'sql' / 'checks'}: SQL directory not found; cocolake's SQL files are "
        "missing (reinstall cocolake, or run it from a checkout that has sql/)"]


def test_pyproject_ships_every_sql_file_and_every_subpackage():
    tomllib = pytest.importorskip("tomllib")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pipeline").rglob("__init__.py")}
    assert set(tool["packages"]) == on_disk | {"pipeline.sql"}
    assert tool["package-dir"] == {"pipeline.sql": "sql"}
    patterns = tool["package-data"]["pipeline.sql"]
    files = [p.relative_to(ROOT / "sql").as_posix() for p in (ROOT / "sql").rglob("*.sql")]
    assert {p.split("/")[0] for p in files} == {"views", "functions", "checks", "queries"}
    # setuptools matches package-data patterns against the path below the package directory
    assert [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []
    assert [p for p in (ROOT / "sql").rglob("*") if p.is_file() and p.suffix != ".sql"] == []


def test_every_header_the_extensions_include_is_in_their_depends():
    """setuptools puts an extension's ``depends`` into the sdist: a header that a C file of
    pipeline/ includes but setup.py does not list would be missing there, and building a
    wheel from the sdist would fail."""
    setup = ast.parse((ROOT / "setup.py").read_text())
    [depends] = [ast.literal_eval(node.value) for node in ast.walk(setup) if isinstance(node, ast.Assign)
                 and [getattr(t, "id", None) for t in node.targets] == ["DEPENDS"]]
    included = {f"pipeline/{name}" for c in (ROOT / "pipeline").glob("*.c")
                for name in re.findall(r'^#include "([^"]+)"', c.read_text(), re.M)}
    assert included == set(depends) == {"pipeline/_cvec.h"}
    assert all((ROOT / d).is_file() for d in depends)
    assert "depends=DEPENDS" in (ROOT / "setup.py").read_text()


@pytest.mark.parametrize("module", ["pipeline", "pipeline.cli"])
def test_the_package_and_its_cli_run_as_modules(module, tmp_path):
    done = subprocess.run([sys.executable, "-m", module, "sql", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ") and "sql" in done.stdout.split("\n", 1)[0]

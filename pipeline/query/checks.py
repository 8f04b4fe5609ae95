"""checks: the data checks of ``sql/checks`` and the analysis queries of ``sql/queries``.

Input: a connection from ``views.connect`` and the SQL files (read by ``sqlfiles.load_sql_dir``).
Output: for a check, the rows it returns: every offending record, empty when the data
passes (sqlmesh audits); for a query, its result. Both as Arrow tables.

Each file is one SELECT; its opening comment says what one row is and is shown as the
file's description. Errors name the file.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re

import duckdb
import pyarrow as pa

from ..errors import QueryError
from .sandbox import run_sql
from .sqlfiles import SQL_DIR, SqlFile, load_sql_dir

log = logging.getLogger(__name__)

CHECKS_DIR = SQL_DIR / "checks"
QUERIES_DIR = SQL_DIR / "queries"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What one check found: its rows (empty = pass)."""

    name: str
    description: str
    rows: pa.Table

    @property
    def passed(self) -> bool:
        return self.rows.num_rows == 0


def description(f: SqlFile) -> str:
    """The file's opening comment as one paragraph (without the ``--``)."""
    lines = []
    for line in f.text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("--"):
            break
        lines.append(stripped[2:].strip())
    return re.sub(r"\s+", " ", " ".join(lines)).strip()


def checks(directory: pathlib.Path | None = None) -> dict[str, SqlFile]:
    return load_sql_dir(directory or CHECKS_DIR)


def queries(directory: pathlib.Path | None = None) -> dict[str, SqlFile]:
    return load_sql_dir(directory or QUERIES_DIR)


def run_sql_file(con: duckdb.DuckDBPyConnection, f: SqlFile) -> pa.Table:
    """A check or query file's rows; it must be read-only and return rows."""
    try:
        table = run_sql(con, f.text)
    except QueryError as err:
        raise QueryError(f"{f.path.name}: {err}") from None
    if table is None:
        raise QueryError(f"{f.path.name}: returned no rows or columns; expected a SELECT")
    return table


def run_checks(
    con: duckdb.DuckDBPyConnection,
    names: list[str] | None = None,
    directory: pathlib.Path | None = None,
) -> list[CheckResult]:
    """Run every check (or the named ones), in file-name order."""
    found = checks(directory)
    unknown = sorted(set(names or []) - set(found))
    if unknown:
        raise QueryError(f"no check named {', '.join(unknown)}; checks are: {', '.join(found)}")
    results = []
    for name in names or list(found):
        f = found[name]
        table = run_sql_file(con, f)
        log.debug("check %s: %d rows", name, table.num_rows)
        results.append(CheckResult(name, description(f), table))
    return results


def run_query(con: duckdb.DuckDBPyConnection, name: str, directory: pathlib.Path | None = None) -> pa.Table:
    found = queries(directory)
    if name not in found:
        raise QueryError(f"no query named {name!r}; queries are: {', '.join(found)}")
    return run_sql_file(con, found[name])

"""sandbox: user SQL that reads the warehouse and nothing else.

Owns what a user's SQL may do on a cocolake connection: ``restrict_to_warehouse`` (DuckDB
opens no file but the manifest's parts, settings locked), ``check_single_select`` (a
predicate wrapped in a query is one SELECT), ``run_sql`` (read-only statements unless told
otherwise) and DuckDB's errors shortened to one line. Imports the shared core and
``query.compat``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING


from ..errors import QueryError
from ..warehouse import Manifest, Warehouse
from .compat import engine, executed_arrow

if TYPE_CHECKING:
    import pyarrow as pa

# what `cocolake sql` runs unless told --allow-external-access (DESCRIBE, SHOW, SUMMARIZE,
# FROM ... and WITH ... are SELECT statements too)
READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")


def restrict_to_warehouse(con: engine.DuckDBPyConnection, wh: Warehouse, manifest: Manifest) -> None:
    """Let the connection read the manifest's Parquet parts and no other file, for good.

    ``enable_external_access = false`` stops COPY, ATTACH, INSTALL/LOAD and every reader of
    other files; ``allowed_paths`` re-admits exactly the parts the views read; the locked
    configuration cannot be changed back by the SQL that runs afterwards.
    """
    paths = sorted({wh.url(p.path) for p in manifest.parts})
    try:
        con.execute("SET allowed_paths = $1", [paths])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except engine.Error as err:
        raise QueryError(f"cannot restrict the connection to the warehouse: {err}") from None


def short_error(err: Exception) -> str:
    """DuckDB's message on one line, without the echoed SQL and caret lines, its hints kept:
    ``Candidate bindings: "id", ...``, ``Did you mean "images"?``, candidate functions
    (separated by ``;``); a mask function's error as the function raised it."""
    return _message_and_line(err)[0]


def _message_and_line(err: Exception) -> tuple[str, str | None]:
    """``short_error``'s message and DuckDB's ``LINE n: ...`` line (None when there is none)."""
    message, where, listed = "", None, False
    for line in str(err).strip().splitlines():
        if line.startswith("LINE "):
            where = line.strip()
            break
        if not line.strip():
            continue
        item = line.startswith("\t")  # DuckDB lists candidate functions one per tab-indented line
        message += ("; " if item and listed else " " if message else "") + line.strip()
        listed = item and not line.rstrip().endswith(":")
    message = re.sub(r"^Invalid Input Error: Python exception occurred while executing the UDF: \w+: ", "", message)
    return message or type(err).__name__, where


def check_single_select(sql: str, what: str) -> None:
    """Refuse ``sql`` (a user's predicate wrapped in a query) unless it is one SELECT statement."""
    try:
        statements = engine.extract_statements(sql)
    except engine.Error as err:
        raise QueryError(f"{what}: {short_error(err)}") from None
    if len(statements) != 1 or statements[0].type != engine.StatementType.SELECT:
        raise QueryError(f"{what}: must be a single SELECT expression, got {len(statements)} statement(s)")


def _one_line(err: Exception) -> str:
    """``short_error`` and the ``LINE n:`` DuckDB points at, when it does."""
    message, where = _message_and_line(err)
    return f"{message} ({where})" if where else message


def run_sql(con: engine.DuckDBPyConnection, text: str, *, read_only: bool = True,
            fetch: Callable = executed_arrow) -> pa.Table | None:
    """Run one or more statements; the last one's rows (None when it returns none), as an
    Arrow table or what ``fetch(con)`` makes of the rows of the statement ``con`` just ran.

    Each statement runs with ``con.execute``, which needs no relation API (``compat.engine``).

    ``read_only``: every statement must be a SELECT or EXPLAIN, checked before any runs.
    Errors are one line: the statement's number when there are several, DuckDB's message.
    """
    try:
        statements = con.extract_statements(text)
    except engine.Error as err:
        raise QueryError(_one_line(err)) from None
    if not statements:
        raise QueryError("no SQL statement given")
    if read_only:
        for n, st in enumerate(statements, 1):
            kind = getattr(st.type, "name", str(st.type)).rsplit(".", 1)[-1]
            if kind not in READ_ONLY_STATEMENTS:
                where = f"statement {n} is" if len(statements) > 1 else "got"
                raise QueryError(
                    f"only read-only queries run here (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, "
                    f"EXPLAIN); {where} {kind}: {st.query.strip()[:60]!r}; "
                    "pass --allow-external-access to run it anyway"
                )
    result = None
    for n, st in enumerate(statements, 1):
        try:
            con.execute(st.query)
            result = fetch(con) if con.description is not None else None
        except engine.Error as err:
            prefix = f"statement {n}: " if len(statements) > 1 else ""
            raise QueryError(prefix + _one_line(err)) from None
    return result

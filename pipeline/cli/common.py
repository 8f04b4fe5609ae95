"""The helpers the SQL commands (sql, views, query, check, report, evaluate) share.

The connection of a command (read only unless told otherwise), and writing a result as a
table, CSV, JSON or Parquet, every column of it: repeated column names are made unique
first, as DuckDB's clients do (``id``, ``id_1``). A result is an Arrow table, or ``Rows``
when every column is of a type whose Python values are the same either way (``fetch``):
writing those needs no pyarrow (and NumPy), whose import costs more than a short query.
Imports ``query`` and ``cli.location``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import datetime as _dt
import decimal
import io
import json
import math
import pathlib
import sys
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .location import settings

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("table", "csv", "json", "parquet")


# ------------------------------------------------------------------ shared helpers
def print_catalogue(found: dict) -> None:
    """One line per SQL file of ``sql/checks`` or ``sql/queries``: its name and what it is for."""
    from ..query import checks

    width = max(len(n) for n in found)
    for name, f in found.items():
        print(f"{name:<{width}}  {checks.description(f)}")


def connect(args, *, restrict: bool = True, functions: bool = True, for_sql: str | None = None):
    """The connection of a command; ``for_sql``: the SQL it will run (see ``views.connect``)."""
    from ..query.views import connect as views_connect

    s = settings(args)
    return views_connect(s["warehouse"], s["dataset"], restrict=restrict, functions=functions, for_sql=for_sql)


def read(args, work, *, for_sql: str | None = None):
    """``work(con)`` on a read-only connection at the current version, run again on the new
    version if a commit replaces it meanwhile (see ``views.read_current``)."""
    from ..query.views import read_current

    s = settings(args)
    return read_current(s["warehouse"], s["dataset"], work, restrict=True, for_sql=for_sql)


def add_output_options(p: argparse.ArgumentParser, default: str = "csv") -> None:
    p.add_argument("--format", choices=FORMATS, default=None,
                   help=f"output format (default: from the --out file's extension, else {default}); "
                   "every format keeps every column: a repeated name gets _1, _2, ... as in DuckDB's "
                   "own clients (SELECT a.id, b.id gives id, id_1)")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")


# ------------------------------------------------------------------ writing results
def _plain(value):
    """A Python value as JSON/CSV can hold it: bytes as base64, lists and structs as is."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time, _dt.timedelta)):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(value) -> str:
    """A CSV/table cell: empty for NULL, JSON for lists and structs."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    value = _plain(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return str(value)


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique as DuckDB's own clients make them (``QueryResult::DeduplicateColumns``,
    as in ``COPY ... TO`` and ``fetchnumpy``): a name seen before, ignoring case, gets ``_1``,
    ``_2``, ... (the next number no earlier name has taken): ``id, id, id`` -> ``id, id_1, id_2``."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        low = name.lower()
        if low not in seen:
            seen[low] = 1
            out.append(name)
            continue
        new = f"{name}_{seen[low]}"
        while new.lower() in seen:
            seen[low] += 1
            new = f"{name}_{seen[low]}"
        seen[new.lower()] = 1
        out.append(new)
    return out


def with_unique_names(table: pa.Table) -> pa.Table:
    """``table`` with ``unique_names``: every format keeps every column (``SELECT a.id, b.id``)."""
    names = unique_names(table.column_names)
    return table if names == table.column_names else table.rename_columns(names)


@dataclasses.dataclass(frozen=True)
class Rows:
    """A result as Python values: column names, which columns are numbers, the rows."""

    names: list[str]
    numeric: list[bool]
    rows: list[tuple]


# DuckDB types whose values ``fetchall`` gives exactly as Arrow's ``to_pylist`` does, and
# HUGEINT (``sum`` of a BIGINT column): ``fetchall`` gives it as the exact int, where DuckDB's
# Arrow conversion makes it a double (``sum(annotations)`` would print as 892.0)
_PLAIN_TYPES = {"BOOLEAN", "VARCHAR", "DOUBLE", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT",
                "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT", "UHUGEINT"}


def fetch(con) -> Rows | pa.Table:
    """The result of the statement ``con`` just ran, for the writers: ``Rows`` when every
    column is of a plain type, else Arrow."""
    described = con.description
    types = [str(d[1]) for d in described]
    if not all(t in _PLAIN_TYPES for t in types):
        from ..query.compat import executed_arrow

        return executed_arrow(con)
    return Rows([d[0] for d in described], [t not in ("BOOLEAN", "VARCHAR") for t in types], con.fetchall())


def _as_rows(result: Rows | pa.Table, limit: int | None = None) -> tuple[Rows, int]:
    """``result`` as ``Rows`` with unique names (its first ``limit`` rows), and its row count."""
    if isinstance(result, Rows):
        return Rows(unique_names(result.names), result.numeric, result.rows[:limit]), len(result.rows)
    import pyarrow as pa

    table = with_unique_names(result)
    part = table if limit is None else table.slice(0, limit)
    rows = list(zip(*(c.to_pylist() for c in part.columns))) if part.num_columns else []
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) for f in table.schema]
    return Rows(table.column_names, numeric, rows), table.num_rows


def to_csv(table: Rows | pa.Table) -> str:
    result, _ = _as_rows(table)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(result.names)
    for row in result.rows:
        w.writerow([_cell(v) for v in row])
    return buf.getvalue()


def to_json(table: Rows | pa.Table) -> str:
    """A JSON array of row objects, one row per line."""
    result, _ = _as_rows(table)
    names = result.names
    rows = [json.dumps({k: _plain(v) for k, v in zip(names, r)}, ensure_ascii=False) for r in result.rows]
    return "[\n" + ",\n".join(rows) + ("\n" if rows else "") + "]\n"


def render_table(table: Rows | pa.Table, max_rows: int = 50, max_width: int = 40) -> str:
    """A plain-text table: header, rule, rows (cells cut at max_width), and a row count."""
    result, num_rows = _as_rows(table, max_rows)
    names = result.names
    cells = [[_cut(_cell(v) if v is not None else "NULL", max_width) for v in r] for r in result.rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    numeric = result.numeric

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(names), line(["-" * w for w in widths])] + [line(r) for r in cells]
    more = num_rows - len(cells)
    noun = "row" if num_rows == 1 else "rows"
    out.append(f"({num_rows} {noun}" + (f", first {len(cells)} shown)" if more > 0 else ")"))
    return "\n".join(out) + "\n"


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def output_format(fmt: str | None, out: str | None) -> str:
    """--format, else the one the --out file's extension names, else csv."""
    if fmt is None:
        suffix = pathlib.Path(out).suffix.lower().lstrip(".") if out else ""
        fmt = {"csv": "csv", "json": "json", "parquet": "parquet", "pq": "parquet", "txt": "table"}.get(suffix, "csv")
    return fmt


def write_result(table: pa.Table | Rows, fmt: str | None, out: str | None) -> None:
    """Write to --out (format from --format or its extension) or standard output; Parquet
    needs an Arrow table."""
    fmt = output_format(fmt, out)
    if fmt == "parquet":
        if not out:
            raise ConfigError("--format parquet needs --out FILE (Parquet is binary)")
        import pyarrow.parquet as pq

        _parent(out)
        pq.write_table(with_unique_names(table), out)
        return
    text = {"csv": to_csv, "json": to_json, "table": render_table}[fmt](table)
    if out:
        _parent(out)
        pathlib.Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _parent(out: str) -> None:
    parent = pathlib.Path(out).parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: directory {parent} does not exist")

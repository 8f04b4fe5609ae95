"""views: a DuckDB connection over a warehouse, with the views of ``sql/views``.

Input: a warehouse location and dataset (any fsspec URL), read through its manifest.
Output: a DuckDB connection where

- ``raw_<table>`` (generated here, from the manifest) are the Parquet parts the manifest
  lists, exactly as written: one row per source record, per source file, with ``split``;
- the views of ``sql/views/*.sql`` (one ``CREATE OR REPLACE VIEW`` per file, file name =
  view name) build on them and never name a path: the location is this module's parameter;
- the mask functions of ``query.functions`` are registered (when ``functions=True``);
- with ``restrict=True``, DuckDB opens no file but those parts (``sandbox``).

Views are applied in dependency order, errors re-raised with the file name; the files are
read by ``sqlfiles``. Imports the shared core and the other ``query`` modules.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable, Iterable
from typing import TypeVar


from ..errors import CocolakeError, QueryError, WarehouseError
from ..schema import TABLES, columns_for, partition_key
from ..warehouse import Manifest, Warehouse
from .compat import engine, fetch_arrow
from .sandbox import check_single_select, restrict_to_warehouse, run_sql, short_error
from .sqlfiles import SQL_DIR, SqlFile, find_sql_dir, load_sql_dir

# the names other modules (and the README) import from here
__all__ = [
    "SQL_DIR", "SqlFile", "build", "calls_unknown_function", "check_single_select", "connect",
    "fetch_arrow", "find_sql_dir", "load_sql_dir", "mentioned_names", "raw_relation_sql",
    "open_database", "read_current", "register_filesystem", "restrict_to_warehouse", "run_sql", "short_error",
    "split_counts",
]

T = TypeVar("T")


_DUCK_TYPES = {"int64": "BIGINT", "int32": "INTEGER", "double": "DOUBLE", "string": "VARCHAR"}


def _duck_type(text: str) -> str:
    """The DuckDB type of a column type's text (``schema.COLUMNS``): ``list<double>`` -> ``DOUBLE[]``."""
    if text.startswith("list<") and text.endswith(">"):
        return _duck_type(text[5:-1]) + "[]"
    try:
        return _DUCK_TYPES[text]
    except KeyError:
        raise TypeError(f"no DuckDB type for {text}") from None


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def raw_relation_sql(wh: Warehouse, manifest: Manifest, table: str) -> str:
    """SELECT over the parts of ``table`` that the manifest lists (typed empty relation if none)."""
    schema = columns_for(table, manifest.id_types())
    key = partition_key(table)  # the Hive partition column: split, or run for model results
    files = sorted(manifest.files(table), key=lambda r: (r.split("/part-")[0], r))
    if not files:
        cols = ", ".join(f"CAST(NULL AS {_duck_type(t)}) AS {name}" for name, t in schema)
        return f"SELECT {cols}, CAST(NULL AS VARCHAR) AS {key} WHERE false"
    listing = ", ".join(_quote(wh.url(r)) for r in files)
    cols = ", ".join(f"CAST({name} AS {_duck_type(t)}) AS {name}" for name, t in schema)
    return (
        f"SELECT {cols}, CAST({key} AS VARCHAR) AS {key} FROM read_parquet([{listing}], "
        "hive_partitioning = true, union_by_name = true)"
    )


_VIEW_REF = re.compile(r"\b([a-z_][a-z0-9_]*)\b")
# what names no relation a view reads: comment lines, string literals, the alias after AS
# (``count(*) AS images``) and a qualified column (``p.images``); what remains names a
# superset of the views it reads
_NOT_READ = re.compile(r"^\s*--.*$|'(?:[^']|'')*'|\bas\s+[a-z_][a-z0-9_]*|\.[a-z_][a-z0-9_]*", re.M)


def _read_names(text: str) -> set[str]:
    """The identifiers of a view's SQL that may name a relation it reads (lower case)."""
    return set(_VIEW_REF.findall(_NOT_READ.sub(" ", text.lower())))


def _view_order(files: dict[str, SqlFile], only: Iterable[str] | None = None) -> list[str]:
    """Views in an order where each comes after the views it reads.

    ``only``: just these names (those that are views) and the views they read.
    """
    deps = {n: {m for m in _read_names(f.text) if m in files and m != n} for n, f in files.items()}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, chain: list[str]):
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise QueryError(f"views depend on each other in a cycle: {' -> '.join(chain + [n])}")
        state[n] = 1
        for m in sorted(deps[n]):
            visit(m, chain + [n])
        state[n] = 2
        order.append(n)

    for n in sorted(files) if only is None else sorted(set(only) & set(files)):
        visit(n, [])
    return order


def apply_views(con: engine.DuckDBPyConnection, files: dict[str, SqlFile],
                only: Iterable[str] | None = None) -> None:
    for name in _view_order(files, only):
        f = files[name]
        try:
            con.execute(f.text)
        except engine.Error as err:
            raise QueryError(f"{f.path.name}: {err}") from None


def register_filesystem(con: engine.DuckDBPyConnection, wh: Warehouse) -> None:
    """Object-store warehouses are read through fsspec (the same filesystem the ingest wrote)."""
    if wh.protocol not in ("file", "local"):
        con.register_filesystem(wh.fs)


def connect(
    warehouse: str,
    dataset: str,
    *,
    storage_options: dict | None = None,
    database: str = ":memory:",
    functions: bool = True,
    sql_dir: pathlib.Path | None = None,
    restrict: bool = False,
    only: Iterable[str] | None = None,
    durable: bool = True,
    for_sql: str | None = None,
    storage_version: str | None = None,
) -> engine.DuckDBPyConnection:
    """A connection with the raw relations, the views and (optionally) the mask functions.

    ``for_sql``: the SQL the connection is opened for. Only the views it names (and those
    they read), the raw relations these name, and the mask functions only when it calls a
    function DuckDB does not have: a one-query command then starts in about half the time.
    SQL that reads the catalog (``reads_catalog``: ``SHOW TABLES``, ``duckdb_views()``) gets everything.

    ``durable=False``: ``database`` is a scratch file, written without waiting for the disk
    (fsync), which on a busy disk costs more than creating the views.

    ``only``: create just these views and the views they read (binding each view costs
    time; a short command needs a few); None creates every view.

    ``restrict=True``: afterwards the connection can read the manifest's parts and no other
    file, and its settings are locked (see ``restrict_to_warehouse``).

    ``storage_version``: a new ``database`` file is written in the storage format of this
    DuckDB release (``"v1.0.0"``: older DuckDB clients can open it); None: this DuckDB's own.
    """
    wh = Warehouse(warehouse, dataset, storage_options)
    manifest = wh.read_manifest()
    if manifest is None:
        raise WarehouseError(f"{wh.url('')}: no warehouse here; run `cocolake ingest` first")
    con = open_database(database, durable, storage_version)
    con.execute("SET enable_progress_bar = false")  # standard output carries query results
    # each view over a table binds its read_parquet again, which reads every part's footer;
    # a connection reads the parts of one version, so one read of each serves it
    con.execute("SET parquet_metadata_cache = true")
    register_filesystem(con, wh)
    raw_for = None
    if for_sql is not None and not reads_catalog(for_sql):
        raw_for = mentioned_names(for_sql)
        only = raw_for if only is None else set(only) | raw_for
        functions = functions and calls_unknown_function(con, for_sql)
    if functions:
        from . import functions as sqlfuncs  # at first use: NumPy and the mask kernel load slowly

        sqlfuncs.register(con)
    for attempt in range(VERSION_ATTEMPTS):
        try:
            build(con, wh, manifest, sql_dir=sql_dir, only=only, raw_for=raw_for)
            break
        except (WarehouseError, QueryError):
            # a commit moved the parts of the version just read out of the table folders
            fresh = wh.read_manifest()
            if attempt + 1 == VERSION_ATTEMPTS or fresh is None or fresh.version == manifest.version:
                con.close()
                raise
            manifest = fresh
    if restrict:
        restrict_to_warehouse(con, wh, manifest)
    return con


# how many versions a reader tries in turn when commits keep replacing the one it opened
VERSION_ATTEMPTS = 5


def read_current(warehouse: str, dataset: str, work: Callable[[engine.DuckDBPyConnection], T], *,
                 storage_options: dict | None = None, **options) -> T:
    """``work(con)`` on a connection (``connect(..., **options)``) at the current version.

    A commit moves the parts it replaces out of the table folders (``warehouse``), so a
    query on a connection opened before the commit fails to open them (on object stores,
    also one that was reading them). Then ``work`` runs again, whole, on a new connection at
    the new version: its result is of one version, never a mix. An error while the version
    stays the same is raised as it is.
    """
    wh = Warehouse(warehouse, dataset, storage_options)
    attempt = 0
    while True:
        attempt += 1
        before = wh.require_manifest().version
        con = connect(warehouse, dataset, storage_options=storage_options, **options)
        try:
            return work(con)
        except (engine.Error, CocolakeError):
            fresh = wh.read_manifest()
            if attempt == VERSION_ATTEMPTS or fresh is None or fresh.version == before:
                raise
        finally:
            con.close()


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def mentioned_names(text: str) -> set[str]:
    """Every identifier in ``text`` (lower case): a superset of the views it reads."""
    return {w.lower() for w in _NAME.findall(text)}


# names of DuckDB's catalog: SQL naming one (SHOW TABLES, duckdb_views(), information_schema.columns)
# asks what the warehouse holds, so its connection gets every view and function
CATALOG_NAMES = frozenset({"show", "show_tables", "show_tables_expanded", "information_schema", "pg_catalog",
                           "duckdb_views", "duckdb_tables", "duckdb_columns", "duckdb_functions",
                           "duckdb_dependencies", "duckdb_macros"})


def reads_catalog(text: str) -> bool:
    """Whether ``text`` lists what the connection holds (views, columns, functions)."""
    return not CATALOG_NAMES.isdisjoint(mentioned_names(text))


def calls_unknown_function(con, text: str) -> bool:
    """Whether ``text`` calls something that is neither a DuckDB function nor a keyword (``IN (``)."""
    called = sorted({m.lower() for m in _CALL.findall(text)})
    if not called:
        return False
    known = con.execute(
        "SELECT lower(function_name) FROM duckdb_functions() WHERE list_contains($1, lower(function_name)) "
        "UNION SELECT lower(keyword_name) FROM duckdb_keywords() WHERE list_contains($1, lower(keyword_name))",
        [called],
    ).fetchall()
    return bool(set(called) - {r[0] for r in known})


def open_database(database: str, durable: bool, storage_version: str | None = None) -> engine.DuckDBPyConnection:
    config = {} if storage_version is None else {"storage_compatibility_version": storage_version}
    if not durable:
        try:
            return engine.connect(database, config={**config, "fsync_mode": "none"})
        except engine.Error:  # a DuckDB without the fsync_mode setting
            pass
    return engine.connect(database, config=config)


def build(con, wh: Warehouse, manifest: Manifest, *, sql_dir: pathlib.Path | None = None,
          only: Iterable[str] | None = None, raw_for: Iterable[str] | None = None,
          stored_counts: bool = True) -> None:
    """The raw relations, then the views (``only``: see ``connect``).

    ``raw_for``: names (those of one query); then only the raw relations that they or the
    views they read mention are created, None: all of them.
    ``stored_counts=False``: ``category_counts`` computes its rows even where they are
    stored (``query.summary`` computes what it stores).
    """
    files = load_sql_dir((sql_dir or SQL_DIR) / "views")
    if sql_dir is None and "annotations" in files and not has_keypoints_files(manifest):
        files["annotations"] = SqlFile("annotations", files["annotations"].path, PLAIN_ANNOTATIONS)
    if sql_dir is None and stored_counts and "category_counts" in files and counts_are_stored(manifest):
        files["category_counts"] = SqlFile("category_counts", files["category_counts"].path, STORED_COUNTS)
    tables = TABLES
    if raw_for is not None:
        names = set(raw_for)
        for name in _view_order(files, only):
            names |= _read_names(files[name].text)
        tables = tuple(t for t in TABLES if f"raw_{t}" in names)
    for table in tables:
        try:
            con.execute(f"CREATE OR REPLACE VIEW raw_{table} AS {raw_relation_sql(wh, manifest, table)}")
        except engine.Error as err:
            raise WarehouseError(f"{wh.url('')}: cannot read table {table}: {err}") from None
    apply_views(con, files, only)


# ``annotations`` of a dataset without person_keypoints files: every row of raw_annotations.
# sql/views/annotations.sql keeps a keypoints file's repeats of the instances out with an
# anti join that reads every instance id, even when there is no keypoints row to drop: a
# fifth of the time of a query that counts annotations.
PLAIN_ANNOTATIONS = "CREATE OR REPLACE VIEW annotations AS SELECT * FROM raw_annotations;"


# ``category_counts`` of a version whose every split with annotations has its rows stored
# (the table category_counts, written at commit by ``query.summary``): those rows, which
# the view of sql/views computes with a scan of every annotation (count DISTINCT, median).
# (columns qualified: a bare ``annotations`` or ``images`` would read as a view it needs)
STORED_COUNTS = ("CREATE OR REPLACE VIEW category_counts AS SELECT c.split, c.category_id, c.annotations, "
                 "c.images, c.crowd, c.mean_area, c.median_area, c.small, c.medium, c.large "
                 "FROM raw_category_counts AS c;")


def counts_are_stored(manifest: Manifest) -> bool:
    """Whether every split with annotations parts has its ``category_counts`` part."""
    return not manifest.missing_derived("category_counts")


def has_keypoints_files(manifest: Manifest) -> bool:
    """Whether a source file of the dataset may hold person_keypoints rows: one whose kind
    (the manifest's ``sources``) is, or names, person_keypoints, or an annotations part that
    no source entry describes."""
    kinds = {(s.get("split"), s.get("source_file")): str(s.get("kind") or "") for s in manifest.sources}
    for part in manifest.parts:
        if part.table != "annotations":
            continue
        kind = kinds.get((part.split, part.source_file))
        if kind is None or "person_keypoints" in kind.split(","):
            return True
    return False


# what a user counts per split, as the views count it: an image once however many files list
# it (the ``images`` view is one row per split and id), an instance once though the
# person_keypoints file repeats it (the ``annotations`` view), ...
SPLIT_COUNTS = ("images", "annotations", "keypoints", "captions", "categories", "rejects")
_SPLIT_COUNTS_SQL = """
SELECT split, 'images' AS kind, count(DISTINCT id) AS n FROM raw_images GROUP BY split
UNION ALL SELECT split, 'annotations', count(*) FROM annotations GROUP BY split
UNION ALL SELECT split, 'keypoints', count(*) FROM keypoints GROUP BY split
UNION ALL SELECT split, 'captions', count(*) FROM captions GROUP BY split
UNION ALL SELECT split, 'categories', count(*) FROM categories GROUP BY split
UNION ALL SELECT split, 'rejects', count(*) FROM rejects GROUP BY split
UNION ALL SELECT DISTINCT split, 'images', 0 FROM raw_info
"""


def split_counts(warehouse: str, dataset: str, storage_options: dict | None = None) -> dict[str, dict[str, int]]:
    """{split: {kind: n}} for every split of the dataset as committed, kinds as in ``SPLIT_COUNTS``."""
    con = connect(warehouse, dataset, storage_options=storage_options, functions=False,
                  only=SPLIT_COUNTS)
    try:
        rows = con.execute(_SPLIT_COUNTS_SQL).fetchall()
    except engine.Error as err:
        raise QueryError(f"counting the rows of each split: {short_error(err)}") from None
    finally:
        con.close()
    out: dict[str, dict[str, int]] = {}
    for split, kind, n in rows:
        counts = out.setdefault(split, dict.fromkeys(SPLIT_COUNTS, 0))
        counts[kind] += int(n)
    return dict(sorted(out.items()))



"""select: a selector (SQL predicate or query) → the rows of the subset, as DuckDB temp tables.

Input: ``ExportOptions`` (warehouse, dataset, ``where`` or ``sql``, ``splits``, ``keep``,
``split_ratio``, ``seed``). Output: a read-only DuckDB connection over the warehouse (the
``raw_<table>`` relations and those views of ``sql/views`` that the selector names or the
writer reads) holding three temp tables, one row per source row that the export writes:

- ``export_images(split, source_file, id, out_split)``
- ``export_annotations(split, source_file, id, image_id, category_id, out_split)``
- ``export_captions(split, source_file, id, out_split)``

Semantics: no selector exports everything (images without annotations included). ``where``
is a boolean expression over ``annotations_enriched``: the subset is the matching
annotations (in every file that has them: a person's keypoints row shares its instance id)
and the images that hold them; ``keep="all"`` widens it to every annotation and caption of
those images. ``sql`` is a query returning ``annotation_id`` (treated like ``where``) or
``image_id`` (whole images, with all their annotations and captions), optionally with a
``split`` column. ``out_split`` is the source split, or with ``split_ratio`` R "train" for
images whose md5(``<seed>:<image id>``) read as a 32-bit fraction is below R, else "val".

Guarantees: the selector runs on a connection opened read-only, as exactly one SELECT
statement; a malformed one raises a one-line ``QueryError`` quoting it. Unless
``allow_external_access``, that connection opens no file but the parts the manifest lists
(``sandbox.restrict_to_warehouse``), so ``read_csv('/etc/passwd')`` in a selector fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import tempfile

from ..errors import ConfigError, QueryError
from ..query import sandbox, views
from ..query.compat import arrow_reader, engine
from ..warehouse import Warehouse
from .options import ExportOptions

log = logging.getLogger(__name__)

# the subset's annotations are selected and fetched (``coco.annotation_query``) with a filter
# on their category ids when they have at most this many: DuckDB skips the row groups of
# other categories by their min/max statistics
FILTER_CATEGORIES = 64


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which ids the selector picked: ``mode`` all | annotations | images."""

    mode: str
    # the temp table holding (split, id) of the picked annotations or images (None: all)
    table: str | None = None
    # whether the selector said which split each id belongs to
    has_split: bool = True
    count: int = 0
    # the category ids of the picked annotations when the selector says (a ``where`` that
    # picks annotations) and they are few (None: not known, or not worth a filter)
    categories: list | None = None


@contextlib.contextmanager
def open_readonly(opts: ExportOptions):
    """A read-only connection with the raw relations and the views the export reads (closed on exit).

    Only the views the selector names (and those they read) are created, and the mask
    functions only when the selector calls a function DuckDB does not have: both cost
    more than selecting and writing a small subset.
    """
    with tempfile.TemporaryDirectory(prefix="cocolake-export-") as tmp:
        db = os.path.join(tmp, "views.duckdb")
        con = views.connect(opts.warehouse, opts.dataset, storage_options=opts.storage_options,
                            database=db, functions=False, only=_needed_views(opts), durable=False)
        try:
            functions = views.calls_unknown_function(con, _selector_text(opts))
            if functions:
                _store_macros(con)
        finally:
            con.close()
        ro = engine.connect(db, read_only=True)
        try:
            # the settings are the connection's, not the file's (see ``views.connect``)
            ro.execute("SET enable_progress_bar = false")
            ro.execute("SET parquet_metadata_cache = true")
            wh = Warehouse(opts.warehouse, opts.dataset, opts.storage_options)
            views.register_filesystem(ro, wh)
            if functions:
                _register_functions(ro)
            if not opts.allow_external_access:  # the selector reads the warehouse's parts, no other file
                sandbox.restrict_to_warehouse(ro, wh, wh.require_manifest())
            yield ro
        finally:
            ro.close()


# the views each writer reads, besides the raw_<table> relations and the export_* tables
_WRITER_VIEWS = {"coco": (), "parquet": (), "yolo": ("annotations", "images", "categories"),
                 "hf": ("annotations", "images", "categories")}


def _selector_text(opts: ExportOptions) -> str:
    return opts.where if opts.where is not None else (opts.sql or "")


def _needed_views(opts: ExportOptions) -> set[str]:
    """Every name the selector mentions (a superset of the views it reads), and the writer's views."""
    names = views.mentioned_names(_selector_text(opts))
    names.update(_WRITER_VIEWS[opts.format])
    if opts.where is not None:
        names.add("annotations_enriched")
    return names


def _sqlfuncs():
    try:
        from ..query import functions as sqlfuncs
    except ImportError:  # an installation without the mask functions: plain SQL still works
        return None
    return sqlfuncs


def _store_macros(con) -> None:
    """The pure-SQL macros go into the database file while it is still writable."""
    funcs = _sqlfuncs()
    if funcs is not None:
        funcs.register_macros(con)


def _register_functions(con) -> None:
    """The Python mask functions on the read-only connection (predicates may use them)."""
    funcs = _sqlfuncs()
    if funcs is None:
        return
    try:
        funcs.register(con)
    except (QueryError, engine.Error) as err:
        # the UDFs are registered first; re-creating the stored SQL macros is what a
        # read-only database refuses, and they are there already
        log.debug("mask functions on the read-only connection: %s", err)


def _run(con, sql: str, params: list, what: str):
    try:
        return con.execute(sql, params)
    except engine.Error as err:
        raise QueryError(f"{what}: {sandbox.short_error(err)}") from None


def _splits(con, opts: ExportOptions) -> list[str]:
    have = [r[0] for r in con.execute("SELECT DISTINCT split FROM raw_info ORDER BY split").fetchall()]
    if not opts.splits:
        return have
    unknown = [s for s in opts.splits if s not in have]
    if unknown:
        raise ConfigError(f"split: {', '.join(unknown)} not in dataset {opts.dataset!r}; "
                          f"it has: {', '.join(have) or 'nothing'}")
    return list(opts.splits)


def select(con, opts: ExportOptions, splits: list[str]) -> Selection:
    """Run the selector; the picked ids land in a temp table ``export_sel(split, id)``."""
    if opts.where is None and opts.sql is None:
        return Selection("all")
    if opts.where is not None:
        what = f"--where {opts.where!r}"
        # the predicate is checked on its own first, so that ") UNION SELECT ..." and
        # "; COPY ..." are refused before anything runs
        sandbox.check_single_select(f"SELECT 1 FROM annotations_enriched WHERE ({opts.where}\n)", what)
        if opts.keep == "all":
            query = ("SELECT DISTINCT CAST(split AS VARCHAR) AS split, image_id AS id "
                     f"FROM annotations_enriched WHERE list_contains(?, split) AND ({opts.where}\n)")
            mode = "images"
        else:
            # with each annotation's category: the fetches filter on the few categories picked
            query = ("SELECT DISTINCT CAST(split AS VARCHAR) AS split, id, category_id "
                     f"FROM annotations_enriched WHERE list_contains(?, split) AND ({opts.where}\n)")
            mode = "annotations"
        _run(con, f"CREATE OR REPLACE TEMP TABLE export_sel AS {query}", [splits], what)
        if mode == "annotations":
            count, categories, missing = con.execute(
                "SELECT count(DISTINCT (split, id)), list(DISTINCT category_id ORDER BY category_id), "
                "count(*) FILTER (WHERE category_id IS NULL) FROM export_sel").fetchone()
            few = not missing and len(categories or []) <= FILTER_CATEGORIES
            log.debug("%s picked %d annotations", what, count)
            return Selection(mode, "export_sel", True, count, (categories or []) if few else None)
        has_split = True
    else:
        what = "--sql " + _shorten(opts.sql)
        text = _TRAILING_SEMICOLON.sub("", opts.sql.strip())
        sandbox.check_single_select(text, what)
        try:
            cols = [d[0].lower() for d in con.execute(f"DESCRIBE {text}").fetchall()]
        except engine.Error as err:
            raise QueryError(f"{what}: {sandbox.short_error(err)}") from None
        if "annotation_id" in cols:
            column, mode = "annotation_id", "annotations"
        elif "image_id" in cols:
            column, mode = "image_id", "images"
        else:
            raise QueryError(f"{what}: the query returns {', '.join(cols)}; it needs an annotation_id or "
                             "image_id column")
        has_split = "split" in cols
        split_col = "CAST(q.split AS VARCHAR)" if has_split else "CAST(NULL AS VARCHAR)"
        if mode == "annotations" and opts.keep == "all":
            # whole images: the images of the picked annotations
            ann_match = "a.split = q.split AND " if has_split else ""
            query = (f"SELECT DISTINCT a.split, a.image_id AS id FROM ({text}\n) AS q "
                     f"JOIN raw_annotations AS a ON {ann_match}a.id = q.{column} "
                     "WHERE list_contains(?, a.split)")
            mode, has_split = "images", True
        else:
            query = (f"SELECT DISTINCT {split_col} AS split, q.{column} AS id FROM ({text}\n) AS q "
                     f"WHERE q.{column} IS NOT NULL" + (" AND list_contains(?, q.split)" if has_split else ""))
        params = [splits] if "list_contains(?" in query else []
        _run(con, f"CREATE OR REPLACE TEMP TABLE export_sel AS {query}", params, what)
    count = con.execute("SELECT count(*) FROM export_sel").fetchone()[0]
    log.debug("%s picked %d %s", what, count, mode)
    return Selection(mode, "export_sel", has_split, count)


# the end of a statement: ";" followed by nothing but blanks and "--" comments
_TRAILING_SEMICOLON = re.compile(r";\s*(--[^\n]*\s*)*$")


def _shorten(sql: str, limit: int = 120) -> str:
    flat = " ".join(sql.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _out_split(opts: ExportOptions, image_id: str) -> tuple[str, list]:
    """SQL for the output split of a row, and its parameters."""
    if opts.split_ratio is None:
        return "split", []
    frac = (f"CAST(('0x' || substr(md5(CAST(? AS VARCHAR) || ':' || CAST({image_id} AS VARCHAR)), 1, 8)) "
            "AS BIGINT) / 4294967296.0")
    return f"CASE WHEN {frac} < ? THEN 'train' ELSE 'val' END", [str(opts.seed), float(opts.split_ratio)]


def build_subset(con, opts: ExportOptions) -> Selection:
    """Select, then fill the export_images / export_annotations / export_captions temp tables."""
    splits = _splits(con, opts)
    sel = select(con, opts, splits)
    img_split, img_p = _out_split(opts, "r.id")
    ann_split, ann_p = _out_split(opts, "r.image_id")
    in_splits = "list_contains(?, r.split)"

    def on(key: str) -> str:
        return f"s.id = r.{key}" + (" AND s.split = r.split" if sel.has_split else "")

    if sel.mode == "all":
        ann_filter = cap_filter = img_filter = ""
    elif sel.mode == "images":
        ann_filter = cap_filter = f" AND EXISTS (SELECT 1 FROM export_sel AS s WHERE {on('image_id')})"
        img_filter = f" AND EXISTS (SELECT 1 FROM export_sel AS s WHERE {on('id')})"
    else:
        ann_filter = f" AND EXISTS (SELECT 1 FROM export_sel AS s WHERE {on('id')})"
        cap_filter = " AND false"
        img_filter = (" AND EXISTS (SELECT 1 FROM export_annotations AS a WHERE a.split = r.split "
                      "AND a.source_file = r.source_file AND a.image_id = r.id)")
    ann_sql = (f"SELECT r.split, r.source_file, r.id, r.image_id, r.category_id, {ann_split} AS out_split "
               f"FROM raw_annotations AS r WHERE {in_splits}{ann_filter}")
    ann_params = ann_p + [splits]
    if sel.categories is not None:
        # the picked categories' rows, whose row groups alone are read, and the person_keypoints
        # rows of other category ids (such a row shares its instance's id, whatever its category)
        ann_sql = (f"{ann_sql} AND list_contains(?, r.category_id) UNION ALL "
                   f"{ann_sql} AND r.kind = 'person_keypoints' AND NOT list_contains(?, r.category_id)")
        ann_params = ann_params + [sel.categories] + ann_params + [sel.categories]
    con.execute(f"CREATE OR REPLACE TEMP TABLE export_annotations AS {ann_sql}", ann_params)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE export_captions AS "
        f"SELECT r.split, r.source_file, r.id, {ann_split} AS out_split "
        f"FROM raw_captions AS r WHERE {in_splits}{cap_filter}",
        ann_p + [splits],
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE export_images AS "
        f"SELECT r.split, r.source_file, r.id, {img_split} AS out_split "
        f"FROM raw_images AS r WHERE {in_splits}{img_filter}",
        img_p + [splits],
    )
    return sel


def files(con, opts: ExportOptions, sel: Selection) -> list[tuple[str, str, str, str, str]]:
    """(out_split, kind, split, source_file, document) of every source file the export writes.

    With no selector every file of the chosen splits is written, even one without images;
    otherwise only files with at least one exported row.
    """
    splits = _splits(con, opts)
    used = (
        "SELECT split, source_file, out_split FROM export_images "
        "UNION SELECT split, source_file, out_split FROM export_annotations "
        "UNION SELECT split, source_file, out_split FROM export_captions"
    )
    if sel.mode == "all" and opts.split_ratio is None:
        used += " UNION SELECT split, source_file, split AS out_split FROM raw_info WHERE list_contains(?, split)"
        params = [splits]
    else:
        params = []
    rows = con.execute(
        f"WITH used AS ({used}) "
        "SELECT u.out_split, i.kind, i.split, i.source_file, i.document "
        "FROM used AS u JOIN raw_info AS i ON i.split = u.split AND i.source_file = u.source_file "
        "ORDER BY u.out_split, i.kind, i.split, i.source_file",
        params,
    ).fetchall()
    return [tuple(r) for r in rows]


def section_categories(con, params: list) -> list | None:
    """The category ids of the annotations one output file takes from one source file
    (``params``: out_split, split, source_file); None when one of them has none.

    A fetch that also filters on these (``list_contains``) lets DuckDB skip the row groups
    of other categories by their min/max statistics: an annotations part holds its rows
    grouped by category (``ingest.tasks.cluster_by_category``), and the wide columns
    (polygons) of the skipped groups are never decoded.
    """
    return _categories(con, " WHERE out_split = $1 AND split = $2 AND source_file = $3", params)


def subset_categories(con) -> list | None:
    """The category ids of all the subset's annotations, for the same filter as
    ``section_categories``; None when one has none, or when there are so many that the row
    groups skipped would not pay for checking each row against the list."""
    ids = _categories(con, "", [])
    return None if not ids or len(ids) > FILTER_CATEGORIES else ids


def _categories(con, where: str, params: list) -> list | None:
    """The distinct category ids of the ``export_annotations`` rows ``where`` keeps, ascending;
    None when one of them has none."""
    ids, missing = con.execute(
        "SELECT list(DISTINCT category_id ORDER BY category_id) FILTER (WHERE category_id IS NOT NULL), "
        f"count(*) FILTER (WHERE category_id IS NULL) FROM export_annotations{where}", params).fetchall()[0]
    return None if missing else (ids or [])


def image_jobs(con) -> list:
    """One ``ImageJob`` per distinct (output split, file_name) of the subset's images."""
    from .images import ImageJob

    rows = con.execute(
        "SELECT DISTINCT e.out_split, r.split, r.id, r.file_name, r.coco_url "
        "FROM export_images AS e JOIN raw_images AS r "
        "ON r.split = e.split AND r.source_file = e.source_file AND r.id = e.id "
        "ORDER BY e.out_split, r.file_name, r.split, r.id"
    ).fetchall()
    jobs, seen = [], set()
    for out_split, split, image_id, file_name, coco_url in rows:
        key = (out_split, file_name)
        if key in seen:
            continue
        seen.add(key)
        jobs.append(ImageJob(image_id, split, out_split, file_name, coco_url))
    return jobs


def arrow_batches(con, sql: str, params: list, rows: int):
    """Iterate the result as Arrow record batches of up to ``rows`` rows (no empty batches)."""
    import duckdb  # noqa: F401  (the relation API, con.sql; see compat.engine)

    relation = con.sql(sql, params=params or None)
    for batch in arrow_reader(relation, rows):
        if batch.num_rows:
            yield batch

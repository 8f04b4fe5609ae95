"""merge.rows: the merged rows of every source file, written as parts and committed at once.

``write`` selects each source file's rows through the id maps of ``ids`` (only ids,
references and ``source_file`` change), writes them in the target's transaction and
commits one manifest replacing all the target held; on failure no part is left. Imports the
shared core, ``query.views`` and ``export.select``.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from ..errors import MergeError
from ..export.select import arrow_batches
from ..query import summary, views
from ..schema import ID_COLUMNS, IdTypes, schema_for
from ..warehouse import Part, Transaction, write_part
from .ids import Source, duck

BATCH_ROWS = 50_000
# the tables read from each source (model runs and derived tables are left out)
SOURCE_TABLES = ("images", "annotations", "keypoints", "captions", "categories", "licenses", "info", "rejects")


# ---------------------------------------------------------------------------- rows


def _select(s: Source, table: str, out_types: IdTypes, mode: str) -> str:
    """The rows of one source file ($1 split, $2 file, $3 new file name) in ``table``'s schema."""
    n = s.rank
    joins = []
    values = {"source_file": "CAST($3 AS VARCHAR)"}

    def mapped(alias: str, mapping: str, column: str, inner: bool = False) -> str:
        joins.append(f"{'' if inner else 'LEFT '}JOIN {mapping} AS {alias} ON {alias}.src = {n} "
                     f"AND {alias}.orig = CAST(r.{column} AS VARCHAR)")
        if inner:
            return f"{alias}.new_id"
        # a reference to no record of its file: kept as it is under keep, else null
        cast = duck(getattr(out_types, ID_COLUMNS[table][column]))
        return f"coalesce({alias}.new_id, CAST({'NULL' if mode == 'renumber' else 'r.' + column} AS {cast}))"

    if table == "images":
        values["id"] = mapped("mi", "map_img", "id", inner=True)
        joins.append(f"LEFT JOIN lic_map AS ml ON ml.src = {n} AND ml.orig = r.license")
        values["license"] = "coalesce(ml.new_id, r.license)"
    elif table == "licenses":
        joins.append(f"LEFT JOIN lic_map AS ml ON ml.src = {n} AND ml.orig = r.id")
        values["id"] = "coalesce(ml.new_id, r.id)"
    elif table == "annotations":
        values["id"] = mapped("ma", "map_ann", "id", inner=True)
        values["image_id"] = mapped("mi", "map_img", "image_id")
        joins.append(f"LEFT JOIN cat_map AS mc ON mc.src = {n} AND mc.split = r.split "
                     "AND mc.orig = CAST(r.category_id AS VARCHAR)")
        values["category_id"] = f"CAST(mc.new_id AS {duck(out_types.category)})"
    elif table == "keypoints":
        values["annotation_id"] = mapped("ma", "map_ann", "annotation_id", inner=True)
        values["image_id"] = mapped("mi", "map_img", "image_id")
    elif table == "captions":
        values["id"] = mapped("mc", "map_cap", "id", inner=True)
        values["image_id"] = mapped("mi", "map_img", "image_id")
    elif table == "info":
        values["id_type"] = f"CAST('{out_types.text()}' AS VARCHAR)"
    schema = schema_for(table, out_types)
    cols = ", ".join(f"{values.get(f.name, 'r.' + f.name)} AS {f.name}" for f in schema)
    return (f"SELECT {cols} FROM {s.view(table)} AS r {' '.join(joins)} "
            "WHERE r.split = $1 AND r.source_file = $2 ORDER BY r.record_index")


def _categories_select() -> str:
    """The merged categories of a kind ($2), as rows of the file $1."""
    return ("SELECT id, name, supercategory, keypoints, skeleton, extra, raw, CAST($1 AS VARCHAR) AS source_file, "
            "kind, CAST(row_number() OVER (ORDER BY id) - 1 AS BIGINT) AS record_index "
            "FROM merged_categories WHERE kind = $2 ORDER BY id")


def _provenance_select(s: Source, out_types: IdTypes) -> str:
    """merge_sources rows of one source and split ($1): the merged id in its space's column."""
    n = s.rank
    img, ann, cat = (f"CAST(NULL AS {duck(t)})" for t in (out_types.image, out_types.annotation, out_types.category))
    return (
        f"SELECT 'images' AS id_space, m.new_id AS image_id, {ann} AS annotation_id, {cat} AS category_id, "
        f"$2 AS source_dataset, m.orig AS original_id FROM map_img AS m "
        f"WHERE m.src = {n} AND m.orig IN (SELECT CAST(id AS VARCHAR) FROM {s.view('images')} WHERE split = $1) "
        f"UNION ALL SELECT 'annotations', {img}, m.new_id, {cat}, $2, m.orig FROM map_ann AS m WHERE m.src = {n} "
        f"AND m.orig IN (SELECT CAST(id AS VARCHAR) FROM {s.view('annotations')} WHERE split = $1) "
        f"UNION ALL SELECT 'captions', {img}, m.new_id, {cat}, $2, m.orig FROM map_cap AS m WHERE m.src = {n} "
        f"AND m.orig IN (SELECT CAST(id AS VARCHAR) FROM {s.view('captions')} WHERE split = $1) "
        f"UNION ALL SELECT DISTINCT 'categories', {img}, {ann}, c.id, $2, m.orig FROM cat_map AS m "
        "JOIN (SELECT DISTINCT id FROM merged_categories) AS c ON CAST(c.id AS VARCHAR) = m.new_id "
        f"WHERE m.src = {n} AND m.split = $1 AND NOT m.dropped "
        "ORDER BY 1, 2, 3, 4, 6"
    )


def _batches(con, sql: str, params: list, schema: pa.Schema):
    for batch in arrow_batches(con, sql, params, BATCH_ROWS):
        yield pa.Table.from_batches([batch]).cast(schema)


def write(con, srcs: list[Source], txn: Transaction, out_types: IdTypes, mode: str) -> dict[str, int]:
    """Every part of the target, then one commit replacing all it held, in the transaction
    ``txn`` of the target (which removes the parts on failure).

    Returns the rows written per table. ``mode`` is the id mode ``ids.choose_mode`` picked.
    """
    target = txn.warehouse
    old = target.read_manifest()
    numbers: dict[str, int] = {}
    parts: list[Part] = []
    entries: list[dict] = []
    counts: dict[str, int] = {}

    def put(table: str, split: str, source_file: str, sql: str, params: list) -> None:
        schema = schema_for(table, out_types)
        if split not in numbers:
            numbers[split] = target.next_part_number(split, old)
        rel = txn.part(table, split, numbers[split])
        try:
            rows = write_part(target.fs, f"{target.root}/{rel}", _batches(con, sql, params, schema), schema)
        except duckdb.Error as err:
            raise MergeError(f"{source_file}: cannot merge table {table}: {views.short_error(err)}") from None
        except OSError as err:
            raise MergeError(f"{target.url(rel)}: cannot write: {err.strerror or err}") from None
        if rows:
            numbers[split] += 1
            parts.append(Part(table, split, source_file, rel, rows, out_types.text()))
            counts[table] = counts.get(table, 0) + rows

    for s in srcs:
        urls = {(e.get("split"), e.get("source_file")): e.get("url") for e in s.manifest.sources}
        files = con.execute(f"SELECT split, source_file, kind FROM {s.view('info')} "
                            "ORDER BY split, source_file").fetchall()
        for split, source_file, kind in files:
            name = f"{s.name}/{source_file}"
            for table in SOURCE_TABLES:
                if table == "categories":
                    put(table, split, name, _categories_select(), [name, kind])
                else:
                    put(table, split, name, _select(s, table, out_types, mode), [split, source_file, name])
            entries.append({"split": split, "source_file": name, "kind": kind, "id_type": out_types.text(),
                            "url": urls.get((split, source_file)),
                            "merged_from": {"dataset": s.name, "source_file": source_file}})
        for split in sorted({f[0] for f in files}):
            put("merge_sources", split, s.name, _provenance_select(s, out_types), [split, s.name])
    replaced = {(p.split, p.source_file) for p in old.parts} if old else set()
    txn.commit(parts, replaced, entries, derive=summary.derived_parts)
    return counts

"""merge: several datasets of one warehouse into a new one, with ids that never collide.

Input: a warehouse, source dataset names (in order), a target name, a ``CategoryMap`` and
an id mode. Output: dataset ``into`` holding every split of every source, committed at
once under its writer lock (a second merge into the same name replaces it); nothing of
the target changes when the merge fails.

- Files: each source file becomes a file of the target named ``<source>/<file>``
  (``A/instances_val2017.json``) in the same split, with its top-level document; files of
  one split and kind are exported together as one COCO file.
- Categories: one per target name (a source name, or what the map says); ids: the map's,
  else the first source's, else new ones after the largest. Every file of a kind lists the
  whole merged category set of that kind, so that all splits agree.
- Images: an image of a later source that is the same file as one of an earlier source
  (same ``coco_url``, or same ``file_name``, height and width) becomes that image.
- Ids: ``keep`` keeps the sources' ids (an error naming the first id two sources share,
  or two id types); ``renumber`` gives int64 ids in source order, then original id order;
  None picks ``keep`` when it would succeed, else ``renumber``.
- Rows are carried as they are (masks, boxes, keypoints, captions, ``extra``, ``raw``):
  only ids, references and ``source_file`` change. ``merge_sources`` records, per split,
  each merged id and the source dataset and original id it came from.

Licenses with the same name and url are one (the first source's id wins, others get new
ids after the largest, and images point to them). Annotations of a dropped category go
(with their keypoints); images stay. Rejected records and the ``info`` rows are carried
per file. Model runs are not merged.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import duckdb
import pyarrow as pa

from .query import views
from .categories import BY_NAME, CategoryMap
from .errors import CocolakeError
from .export.select import arrow_batches
from .schema import ID_COLUMNS, IdTypes, schema_for
from .warehouse import Manifest, Part, Warehouse, write_part

log = logging.getLogger(__name__)

IdMode = Literal["keep", "renumber"]
BATCH_ROWS = 50_000
# the tables read from each source (model runs and derived tables are left out)
SOURCE_TABLES = ("images", "annotations", "keypoints", "captions", "categories", "licenses", "info", "rejects")
# the tables whose ids must not collide under keep, with their noun in messages
SPACES = (("images", "image"), ("annotations", "annotation"), ("captions", "caption"))


class MergeError(CocolakeError):
    """A merge cannot be made: a missing source, colliding ids under ``keep``, a bad target."""


@dataclasses.dataclass
class MergeReport:
    dataset: str
    sources: list[str]
    ids: str
    reason: str
    rows: dict[str, int] = dataclasses.field(default_factory=dict)
    shared_images: int = 0
    categories: int = 0

    def lines(self) -> list[str]:
        out = [f"{self.dataset}: merged from {', '.join(self.sources)}; ids {self.ids} ({self.reason})"]
        out.append(f"  {self.categories} categories; {self.shared_images} image(s) shared with an earlier source")
        out.append("  rows written: " + ", ".join(f"{n} {t}" for t, n in self.rows.items() if n))
        return out


@dataclasses.dataclass(frozen=True)
class _Source:
    rank: int
    name: str
    wh: Warehouse
    manifest: Manifest

    @property
    def id_types(self) -> IdTypes:
        return self.manifest.id_types()

    def type_of(self, space: str) -> str:
        return getattr(self.id_types, space)

    def view(self, table: str) -> str:
        return f"s{self.rank}_{table}"


def merge(warehouse: str, sources: list[str], into: str, *, categories: CategoryMap = BY_NAME,
          ids: IdMode | None = None, storage_options: dict | None = None) -> MergeReport:
    """``cocolake merge`` as a function: write dataset ``into`` from ``sources``."""
    if ids not in (None, "keep", "renumber"):
        raise MergeError(f"--ids {ids!r}: use keep or renumber")
    target = Warehouse(warehouse, into, storage_options)
    srcs = _open_sources(warehouse, sources, into, storage_options)
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        views.register_filesystem(con, target)
        for s in srcs:
            for table in SOURCE_TABLES:
                con.execute(f"CREATE TEMP VIEW {s.view(table)} AS {views.raw_relation_sql(s.wh, s.manifest, table)}")
        # which categories are dropped does not depend on the ids (the annotations kept do)
        _register(con, "cat_map", _category_map(con, srcs, categories, "string"))
        _tables_of_ids(con, srcs)
        mode, reason = _choose_mode(con, srcs, ids)
        out_types = _out_types(srcs, mode)
        con.execute("DROP TABLE cat_map")
        _register(con, "cat_map", _category_map(con, srcs, categories, out_types.category))
        _new_ids(con, mode, out_types)
        _register(con, "lic_map", _license_map(con, srcs))
        _merged_categories(con, srcs, out_types)
        report = MergeReport(into, [s.name for s in srcs], mode, reason)
        report.shared_images = con.execute("SELECT count(*) FROM img WHERE NOT canonical").fetchone()[0]
        report.categories = con.execute("SELECT count(DISTINCT id) FROM merged_categories").fetchone()[0]
        with target.writer_lock():
            _write(con, srcs, target, out_types, report)
        return report
    finally:
        con.close()


def _open_sources(warehouse: str, names: list[str], into: str, storage_options) -> list[_Source]:
    if not names:
        raise MergeError("give at least one --from dataset")
    seen = set()
    out = []
    for rank, name in enumerate(names):
        if name in seen:
            raise MergeError(f"--from {name}: named twice")
        if name == into:
            raise MergeError(f"--into {into}: is also a --from dataset; merge into a new name")
        seen.add(name)
        wh = Warehouse(warehouse, name, storage_options)
        manifest = wh.read_manifest()
        if manifest is None:
            raise MergeError(f"--from {name}: no dataset {name!r} in {warehouse} (no {wh.url('_manifest.json')})")
        out.append(_Source(rank, name, wh, manifest))
    return out


def _register(con, name: str, table: pa.Table) -> None:
    con.register(f"{name}_arrow", table)
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
    con.unregister(f"{name}_arrow")


def _num(s: _Source, column: str, space: str) -> str:
    """A sort key of an id of ``space``: its number for integer ids (NULL for string ids)."""
    return f"CAST({column} AS BIGINT)" if s.type_of(space) == "int64" else "CAST(NULL AS BIGINT)"


def _duck(id_type: str) -> str:
    return "BIGINT" if id_type == "int64" else "VARCHAR"


def _out_types(srcs: list[_Source], mode: str) -> IdTypes:
    """The merged dataset's id types: the sources' under ``keep``, int64 when renumbered.

    Category ids are never renumbered (they are matched by name): string when every
    source's are strings, else int64 (a string id of the first source that is no integer
    then gets a new id).
    """
    category = "string" if all(s.type_of("category") == "string" for s in srcs) else "int64"
    if mode == "keep":
        return IdTypes(srcs[0].type_of("image"), srcs[0].type_of("annotation"), category)
    return IdTypes("int64", "int64", category)


# ---------------------------------------------------------------------------- categories


def _category_map(con, srcs: list[_Source], cmap: CategoryMap, out_type: str) -> pa.Table:
    """cat_map rows: (src, split, orig, new_id as text, name, dropped) for every source category.

    An id of the first source that ``out_type`` cannot hold (a string id in an int64
    dataset) is given a new id like a new name.
    """
    rows = []
    for s in srcs:
        rows += [(s.rank, *r) for r in con.execute(
            f"SELECT split, CAST(id AS VARCHAR), {_num(s, 'id', 'category')} AS num, name FROM {s.view('categories')} "
            "GROUP BY ALL ORDER BY split, num NULLS LAST, 2").fetchall()]
    cmap.check_names({r[4] for r in rows if r[4] is not None})
    fixed = dict(cmap.ids)
    assigned: dict[str, int | str] = dict(fixed)
    taken = {str(v) for v in fixed.values()}  # as text: a string id "3" and a fixed id 3 are one
    # the first source's ids win, then new names get ids after the largest
    for src, _split, orig, num, name in sorted(rows, key=lambda r: (r[0], r[3] is None, r[3] or 0, r[2])):
        target = cmap.target(name) if name is not None else None
        if target is None or target in assigned or src != 0:
            continue
        own = num if num is not None else orig if out_type == "string" else _int_or_none(orig)
        if own is not None and str(own) not in taken:
            assigned[target] = own
            taken.add(str(own))
    for src, _split, orig, num, name in sorted(rows, key=lambda r: (r[0], r[3] is None, r[3] or 0, r[2])):
        target = cmap.target(name) if name is not None else None
        if target is None or target in assigned:
            continue
        assigned[target] = max([n for n in map(_int_or_none, taken) if n is not None], default=0) + 1
        taken.add(str(assigned[target]))
    out = {"src": [], "split": [], "orig": [], "new_id": [], "name": [], "dropped": []}
    for src, split, orig, _num_, name in rows:
        target = cmap.target(name) if name is not None else None
        out["src"].append(src)
        out["split"].append(split)
        out["orig"].append(orig)
        out["new_id"].append(None if target is None else str(assigned[target]))
        out["name"].append(target)
        out["dropped"].append(target is None)
    return pa.table({"src": pa.array(out["src"], pa.int32()), "split": pa.array(out["split"], pa.string()),
                     "orig": pa.array(out["orig"], pa.string()), "new_id": pa.array(out["new_id"], pa.string()),
                     "name": pa.array(out["name"], pa.string()), "dropped": pa.array(out["dropped"], pa.bool_())})


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _merged_categories(con, srcs: list[_Source], out_types: IdTypes) -> None:
    """merged_categories: per kind and target id, the first source row mapped to it."""
    cast = _duck(out_types.category)
    union = " UNION ALL ".join(
        f"SELECT {s.rank} AS src, c.* REPLACE (CAST(c.id AS VARCHAR) AS id), {_num(s, 'c.id', 'category')} AS num "
        f"FROM {s.view('categories')} AS c" for s in srcs)
    con.execute(
        "CREATE TEMP TABLE merged_categories AS "
        f"SELECT c.kind, CAST(m.new_id AS {cast}) AS id, m.name, c.supercategory, c.keypoints, c.skeleton, "
        "c.extra, c.raw "
        f"FROM ({union}) AS c JOIN cat_map AS m ON m.src = c.src AND m.split = c.split "
        "AND m.orig = CAST(c.id AS VARCHAR) WHERE NOT m.dropped "
        "QUALIFY row_number() OVER (PARTITION BY c.kind, m.new_id ORDER BY c.src, c.split, c.num NULLS LAST, "
        "c.record_index) = 1"
    )


def _license_map(con, srcs: list[_Source]) -> pa.Table:
    """lic_map rows (src, orig, new_id): licenses with the same name and url are one.

    The first source's license ids win; another source's license that is none of the
    licenses seen so far gets a new id after the largest (COCO's ids 1-8 mean particular
    licenses; a custom set's license 1 is likely another).
    """
    rows = []
    for s in srcs:
        rows += [(s.rank, *r) for r in con.execute(
            f"SELECT id, first(name ORDER BY split, source_file, record_index), "
            f"first(url ORDER BY split, source_file, record_index) FROM {s.view('licenses')} "
            "WHERE id IS NOT NULL GROUP BY id ORDER BY id").fetchall()]
    seen: dict[tuple, int] = {}
    for src, lid, name, url in rows:
        if src == 0:
            seen.setdefault((name, url), lid)
    following = max((r[1] for r in rows if r[0] == 0), default=0) + 1
    out = []
    for src, lid, name, url in rows:
        if src == 0:
            new = lid
        elif (name, url) in seen:
            new = seen[(name, url)]
        else:
            new = seen[(name, url)] = following
            following += 1
        out.append((src, lid, new))
    return pa.table({"src": pa.array([r[0] for r in out], pa.int32()),
                     "orig": pa.array([r[1] for r in out], pa.int64()),
                     "new_id": pa.array([r[2] for r in out], pa.int64())})


# ---------------------------------------------------------------------------- ids


def _tables_of_ids(con, srcs: list[_Source]) -> None:
    """img / ann / cap: one row per (source, original id), with images' same-file matches."""
    rows = " UNION ALL ".join(
        f"SELECT {s.rank} AS src, CAST(id AS VARCHAR) AS orig, {_num(s, 'id', 'image')} AS num, "
        "file_name, height, width, "
        f"coco_url, source_file, record_index FROM {s.view('images')}" for s in srcs)
    con.execute(
        "CREATE TEMP TABLE img0 AS SELECT src, orig, num, "
        "first(file_name ORDER BY source_file, record_index) AS file_name, "
        "first(height ORDER BY source_file, record_index) AS height, "
        "first(width ORDER BY source_file, record_index) AS width, "
        "first(coco_url ORDER BY source_file, record_index) AS coco_url "
        f"FROM ({rows}) GROUP BY src, orig, num"
    )
    # the first image (source order, then id) with each coco_url and each (file_name, size)
    key = "struct_pack(src := src, n := num, o := orig)"
    con.execute(
        "CREATE TEMP TABLE img1 AS "
        f"WITH by_url AS (SELECT coco_url, min({key}) AS rep FROM img0 WHERE coco_url IS NOT NULL GROUP BY coco_url), "
        f"by_name AS (SELECT file_name, height, width, min({key}) AS rep FROM img0 WHERE file_name IS NOT NULL "
        "GROUP BY file_name, height, width) "
        "SELECT i.*, least(CASE WHEN u.rep.src < i.src THEN u.rep END, CASE WHEN f.rep.src < i.src THEN f.rep END, "
        "struct_pack(src := i.src, n := i.num, o := i.orig)) AS rep "
        "FROM img0 AS i LEFT JOIN by_url AS u ON u.coco_url = i.coco_url "
        "LEFT JOIN by_name AS f ON f.file_name = i.file_name AND f.height = i.height AND f.width = i.width"
    )
    # a representative that is itself the same file as an image of a still earlier source
    con.execute(
        "CREATE TEMP TABLE img AS SELECT i.src, i.orig, i.num, coalesce(r.rep, i.rep) AS rep, "
        "coalesce(r.rep, i.rep) = struct_pack(src := i.src, n := i.num, o := i.orig) AS canonical "
        "FROM img1 AS i LEFT JOIN img1 AS r ON r.src = i.rep.src AND r.orig = i.rep.o"
    )
    for table, name in (("annotations", "ann"), ("captions", "cap")):
        if table == "annotations":  # the annotations of dropped categories have no id
            union = " UNION ALL ".join(
                f"SELECT DISTINCT {s.rank} AS src, CAST(a.id AS VARCHAR) AS orig, "
                f"{_num(s, 'a.id', 'annotation')} AS num "
                f"FROM {s.view(table)} AS a LEFT JOIN cat_map AS m ON m.src = {s.rank} AND m.split = a.split "
                "AND m.orig = CAST(a.category_id AS VARCHAR) WHERE NOT coalesce(m.dropped, false)" for s in srcs)
        else:
            union = " UNION ALL ".join(
                f"SELECT DISTINCT {s.rank} AS src, CAST(id AS VARCHAR) AS orig, {_num(s, 'id', 'annotation')} AS num "
                f"FROM {s.view(table)}" for s in srcs)
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT DISTINCT * FROM ({union})")


def _first_collision(con, srcs: list[_Source]) -> str | None:
    """The first id (images, then annotations, then captions) that two sources share."""
    for (space, noun), table in zip(SPACES, ("img", "ann", "cap")):
        where = "WHERE canonical" if table == "img" else ""
        row = con.execute(
            f"SELECT orig, list(DISTINCT src ORDER BY src) FROM {table} {where} GROUP BY orig "
            "HAVING count(DISTINCT src) > 1 ORDER BY min(num) NULLS LAST, orig LIMIT 1").fetchone()
        if row:
            a, b = (srcs[r].name for r in row[1][:2])
            kind = "image" if table == "img" else "annotation"
            shown = row[0] if srcs[row[1][0]].type_of(kind) == "int64" else repr(row[0])
            return f"{noun} id {shown} is in both {a} and {b}"
    return None


def _choose_mode(con, srcs: list[_Source], ids: IdMode | None) -> tuple[str, str]:
    if ids == "renumber":
        return "renumber", "asked for"
    for space in ("image", "annotation"):
        if len({s.type_of(space) for s in srcs}) > 1:
            if ids == "keep":
                detail = ", ".join(f"{s.name}: {s.type_of(space)}" for s in srcs)
                raise MergeError(f"--ids keep: the sources' {space} ids are of different types ({detail}); "
                                 "use --ids renumber")
            return "renumber", f"the sources' {space} ids are of different types"
    collision = _first_collision(con, srcs)
    if collision is not None:
        if ids == "keep":
            raise MergeError(f"--ids keep: {collision}; use --ids renumber (the default when ids collide)")
        return "renumber", collision
    return "keep", "asked for" if ids == "keep" else "no id collides"


def _new_ids(con, mode: str, out_types: IdTypes) -> None:
    """map_img / map_ann / map_cap (src, orig, new_id): the merged id of every source id."""
    if mode == "renumber":
        con.execute(
            "CREATE TEMP TABLE canon AS SELECT src, orig, "
            "CAST(row_number() OVER (ORDER BY src, num NULLS LAST, orig) AS BIGINT) AS new_id FROM img WHERE canonical")
        for name in ("ann", "cap"):
            con.execute(f"CREATE TEMP TABLE map_{name} AS SELECT src, orig, "
                        f"CAST(row_number() OVER (ORDER BY src, num NULLS LAST, orig) AS BIGINT) AS new_id FROM {name}")
    else:
        con.execute(f"CREATE TEMP TABLE canon AS SELECT src, orig, CAST(orig AS {_duck(out_types.image)}) AS new_id "
                    "FROM img WHERE canonical")
        for name in ("ann", "cap"):
            con.execute(f"CREATE TEMP TABLE map_{name} AS SELECT src, orig, "
                        f"CAST(orig AS {_duck(out_types.annotation)}) AS new_id FROM {name}")
    con.execute("CREATE TEMP TABLE map_img AS SELECT i.src, i.orig, c.new_id FROM img AS i "
                "JOIN canon AS c ON c.src = i.rep.src AND c.orig = i.rep.o")


# ---------------------------------------------------------------------------- rows


def _select(s: _Source, table: str, out_types: IdTypes, mode: str) -> str:
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
        cast = _duck(getattr(out_types, ID_COLUMNS[table][column]))
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
        values["category_id"] = f"CAST(mc.new_id AS {_duck(out_types.category)})"
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


def _provenance_select(s: _Source, out_types: IdTypes) -> str:
    """merge_sources rows of one source and split ($1): the merged id in its space's column."""
    n = s.rank
    img, ann, cat = (f"CAST(NULL AS {_duck(t)})" for t in (out_types.image, out_types.annotation, out_types.category))
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


def _write(con, srcs: list[_Source], target: Warehouse, out_types: IdTypes, report: MergeReport) -> None:
    """Every part of the target, then one commit replacing all it held; no part left on failure."""
    old = target.read_manifest()
    numbers: dict[str, int] = {}
    parts: list[Part] = []
    written: list[str] = []
    entries: list[dict] = []
    mode = report.ids

    def put(table: str, split: str, source_file: str, sql: str, params: list) -> None:
        schema = schema_for(table, out_types)
        if split not in numbers:
            numbers[split] = target.next_part_number(split, old)
        rel = Warehouse.part_rel(table, split, numbers[split])
        written.append(rel)
        try:
            rows = write_part(target.fs, f"{target.root}/{rel}", _batches(con, sql, params, schema), schema)
        except duckdb.Error as err:
            raise MergeError(f"{source_file}: cannot merge table {table}: {views.short_error(err)}") from None
        except OSError as err:
            raise MergeError(f"{target.url(rel)}: cannot write: {err.strerror or err}") from None
        if rows:
            numbers[split] += 1
            parts.append(Part(table, split, source_file, rel, rows, out_types.text()))
            report.rows[table] = report.rows.get(table, 0) + rows

    try:
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
        target.commit(parts, replaced, entries)
    except BaseException:
        target.remove_parts(written)
        raise

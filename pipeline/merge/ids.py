"""merge.ids: which merged id every source id, category and license gets.

Temp tables on the merge's DuckDB connection: ``cat_map`` and ``lic_map`` (categories by
target name, licenses by name and url), ``img`` / ``ann`` / ``cap`` (every source id, images
with the earlier image that is the same file), and ``map_img`` / ``map_ann`` / ``map_cap``
(source id → merged id under ``keep`` or ``renumber``). Imports the shared core and
``categories``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import pyarrow as pa

from ..categories import CategoryMap
from ..errors import MergeError
from ..schema import IdTypes
from ..warehouse import Manifest, Warehouse

IdMode = Literal["keep", "renumber"]
# the tables whose ids must not collide under keep, with their noun in messages
SPACES = (("images", "image"), ("annotations", "annotation"), ("captions", "caption"))


@dataclasses.dataclass(frozen=True)
class Source:
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


def num_key(s: Source, column: str, space: str) -> str:
    """A sort key of an id of ``space``: its number for integer ids (NULL for string ids)."""
    return f"CAST({column} AS BIGINT)" if s.type_of(space) == "int64" else "CAST(NULL AS BIGINT)"


def duck(id_type: str) -> str:
    return "BIGINT" if id_type == "int64" else "VARCHAR"


def out_types(srcs: list[Source], mode: str) -> IdTypes:
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


def category_map(con, srcs: list[Source], cmap: CategoryMap, out_type: str) -> pa.Table:
    """cat_map rows: (src, split, orig, new_id as text, name, dropped) for every source category.

    An id of the first source that ``out_type`` cannot hold (a string id in an int64
    dataset) is given a new id like a new name.
    """
    rows = []
    for s in srcs:
        rows += [(s.rank, *r) for r in con.execute(
            f"SELECT split, CAST(id AS VARCHAR), {num_key(s, 'id', 'category')} AS num, name FROM {s.view('categories')} "
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


def merged_categories(con, srcs: list[Source], out_types: IdTypes) -> None:
    """merged_categories: per kind and target id, the first source row mapped to it."""
    cast = duck(out_types.category)
    union = " UNION ALL ".join(
        f"SELECT {s.rank} AS src, c.* REPLACE (CAST(c.id AS VARCHAR) AS id), {num_key(s, 'c.id', 'category')} AS num "
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


def license_map(con, srcs: list[Source]) -> pa.Table:
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


def tables_of_ids(con, srcs: list[Source]) -> None:
    """img / ann / cap: one row per (source, original id), with images' same-file matches."""
    rows = " UNION ALL ".join(
        f"SELECT {s.rank} AS src, CAST(id AS VARCHAR) AS orig, {num_key(s, 'id', 'image')} AS num, "
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
                f"{num_key(s, 'a.id', 'annotation')} AS num "
                f"FROM {s.view(table)} AS a LEFT JOIN cat_map AS m ON m.src = {s.rank} AND m.split = a.split "
                "AND m.orig = CAST(a.category_id AS VARCHAR) WHERE NOT coalesce(m.dropped, false)" for s in srcs)
        else:
            union = " UNION ALL ".join(
                f"SELECT DISTINCT {s.rank} AS src, CAST(id AS VARCHAR) AS orig, {num_key(s, 'id', 'annotation')} AS num "
                f"FROM {s.view(table)}" for s in srcs)
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT DISTINCT * FROM ({union})")


def _first_collision(con, srcs: list[Source]) -> str | None:
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


def choose_mode(con, srcs: list[Source], ids: IdMode | None) -> tuple[str, str]:
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


def new_ids(con, mode: str, out_types: IdTypes) -> None:
    """map_img / map_ann / map_cap (src, orig, new_id): the merged id of every source id."""
    if mode == "renumber":
        con.execute(
            "CREATE TEMP TABLE canon AS SELECT src, orig, "
            "CAST(row_number() OVER (ORDER BY src, num NULLS LAST, orig) AS BIGINT) AS new_id FROM img WHERE canonical")
        for name in ("ann", "cap"):
            con.execute(f"CREATE TEMP TABLE map_{name} AS SELECT src, orig, "
                        f"CAST(row_number() OVER (ORDER BY src, num NULLS LAST, orig) AS BIGINT) AS new_id FROM {name}")
    else:
        con.execute(f"CREATE TEMP TABLE canon AS SELECT src, orig, CAST(orig AS {duck(out_types.image)}) AS new_id "
                    "FROM img WHERE canonical")
        for name in ("ann", "cap"):
            con.execute(f"CREATE TEMP TABLE map_{name} AS SELECT src, orig, "
                        f"CAST(orig AS {duck(out_types.annotation)}) AS new_id FROM {name}")
    con.execute("CREATE TEMP TABLE map_img AS SELECT i.src, i.orig, c.new_id FROM img AS i "
                "JOIN canon AS c ON c.src = i.rep.src AND c.orig = i.rep.o")



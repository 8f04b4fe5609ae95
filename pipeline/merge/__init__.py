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

Modules: ``ids`` (the id, category and license maps), ``rows`` (the parts and the commit).
Imports the shared core, ``categories``, ``query.views`` and (through ``rows``) ``export.select``.
"""

from __future__ import annotations

import dataclasses
import logging

import duckdb
import pyarrow as pa

from ..categories import BY_NAME, CategoryMap
from ..errors import MergeError
from ..query import views
from ..warehouse import Warehouse
from .ids import (IdMode, Source, category_map, choose_mode, license_map, merged_categories, new_ids, out_types,
                  tables_of_ids)
from .rows import SOURCE_TABLES, write

__all__ = ["IdMode", "MergeError", "MergeReport", "merge"]

log = logging.getLogger(__name__)


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
        _register(con, "cat_map", category_map(con, srcs, categories, "string"))
        tables_of_ids(con, srcs)
        mode, reason = choose_mode(con, srcs, ids)
        types = out_types(srcs, mode)
        con.execute("DROP TABLE cat_map")
        _register(con, "cat_map", category_map(con, srcs, categories, types.category))
        new_ids(con, mode, types)
        _register(con, "lic_map", license_map(con, srcs))
        merged_categories(con, srcs, types)
        report = MergeReport(into, [s.name for s in srcs], mode, reason)
        report.shared_images = con.execute("SELECT count(*) FROM img WHERE NOT canonical").fetchone()[0]
        report.categories = con.execute("SELECT count(DISTINCT id) FROM merged_categories").fetchone()[0]
        with target.transaction() as txn:
            report.rows = write(con, srcs, txn, types, mode)
        return report
    finally:
        con.close()


def _open_sources(warehouse: str, names: list[str], into: str, storage_options) -> list[Source]:
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
        out.append(Source(rank, name, wh, manifest))
    return out


def _register(con, name: str, table: pa.Table) -> None:
    con.register(f"{name}_arrow", table)
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
    con.unregister(f"{name}_arrow")

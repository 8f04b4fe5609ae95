"""parquet: the subset as a warehouse of its own, in the same layout, with a manifest.

Input: a connection prepared by ``select.build_subset``. Output:
``<out>/<dataset>/<table>/split=<split>/part-NNNNN.parquet`` and ``_manifest.json``, one
part per table, output split and source file, committed through ``Warehouse.transaction``
(so ``views.connect(out, dataset)``, a further ingest into it, and another export all work).
A run writing the dataset already at ``out`` (an ingest into an earlier export) holds its
writer lock: the export is refused meanwhile, and holds that lock itself until it is in place.

Rows are the source rows of the subset, unchanged (same columns, ``record_index`` and
provenance): images, annotations, keypoints and captions filtered like the COCO export;
categories, licenses and info whole for every source file the subset touches. With
``--images copy`` the images table gets an ``image_bytes`` column (the encoded file, e.g.
JPEG) filled in one row per image: the row of the first file by kind (instances, stuff,
person_keypoints, captions, image_info), which is the row the ``images`` view shows. Views
and readers that do not ask for the column ignore it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import pyarrow as pa

from ..query import summary
from ..schema import schema_for
from ..warehouse import MANIFEST, Part, Warehouse, write_part
from . import images as image_files, output
from .options import ExportOptions, Progress
from .select import FILTER_CATEGORIES, arrow_batches, section_categories

log = logging.getLogger(__name__)

BATCH_ROWS = 2_000  # image bytes are fetched per batch: memory is bounded by one batch

_KIND_RANK = ("CASE i.kind WHEN 'instances' THEN 0 WHEN 'stuff' THEN 1 WHEN 'person_keypoints' THEN 2 "
              "WHEN 'captions' THEN 3 ELSE 4 END")

_ROWS = {
    "images": "SELECT r.* FROM raw_images AS r SEMI JOIN export_images AS e "
              "ON e.split = r.split AND e.source_file = r.source_file AND e.id = r.id AND e.out_split = ? "
              "WHERE r.split = ? AND r.source_file = ? ORDER BY r.record_index",
    "annotations": "SELECT r.* FROM raw_annotations AS r SEMI JOIN export_annotations AS e "
                   "ON e.split = r.split AND e.source_file = r.source_file AND e.id = r.id AND e.out_split = ? "
                   "WHERE r.split = ? AND r.source_file = ?{categories} ORDER BY r.record_index",
    "keypoints": "SELECT r.* FROM raw_keypoints AS r SEMI JOIN export_annotations AS e "
                 "ON e.split = r.split AND e.source_file = r.source_file AND e.id = r.annotation_id "
                 "AND e.out_split = ? WHERE r.split = ? AND r.source_file = ? ORDER BY r.record_index",
    "captions": "SELECT r.* FROM raw_captions AS r SEMI JOIN export_captions AS e "
                "ON e.split = r.split AND e.source_file = r.source_file AND e.id = r.id AND e.out_split = ? "
                "WHERE r.split = ? AND r.source_file = ? ORDER BY r.record_index",
}
_WHOLE = ("categories", "licenses", "info")
TABLES = ("images", "annotations", "keypoints", "captions", "categories", "licenses", "info")


@dataclasses.dataclass
class _Counter:
    rows: dict

    def add(self, rel: str, table: str, n: int) -> None:
        self.rows.setdefault(rel, {}).setdefault(table, 0)
        self.rows[rel][table] += n


def _owner_table(con) -> None:
    """export_image_owner(split, id, source_file): the row of each image that carries its bytes."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE export_image_owner AS "
        f"SELECT e.split, e.id, first(e.source_file ORDER BY {_KIND_RANK}, e.source_file) AS source_file "
        "FROM export_images AS e JOIN raw_info AS i ON i.split = e.split AND i.source_file = e.source_file "
        "GROUP BY e.split, e.id"
    )


def _with_bytes(table: pa.Table, split: str, opts: ExportOptions, progress: Progress | None,
                done: list) -> pa.Table:
    """Append ``image_bytes``: the file's bytes where ``_owner`` is true, else null."""
    owner = table.column("_owner").to_pylist()
    ids = table.column("id").to_pylist()
    names = table.column("file_name").to_pylist()
    urls = table.column("coco_url").to_pylist()
    want = [k for k, is_owner in enumerate(owner) if is_owner]
    jobs = [image_files.ImageJob(ids[k], split, split, names[k], urls[k]) for k in want]

    def step(_phase, n, _total):
        if progress:
            progress("images", done[0] + n, done[1])

    data = image_files.read_all(jobs, image_root=opts.image_root, threads=opts.threads, progress=step)
    done[0] += len(jobs)
    column: list = [None] * len(ids)
    for k, b in zip(want, data):
        column[k] = b
    return table.append_column("image_bytes", pa.array(column, pa.binary()))


def target_lock(opts: ExportOptions):
    """The writer lock of the dataset already at ``--out`` (an earlier export, which runs may
    ingest into), held until the new export is in place; a no-op where none is there."""
    wh = Warehouse(opts.out, opts.dataset, opts.out_storage_options)
    if wh.protocol in ("file", "local") and wh.fs.exists(f"{wh.root}/{MANIFEST}") \
            and wh.fs.exists(f"{wh.root.rsplit('/', 1)[0]}/{output.MARKER}"):
        return wh.writer_lock()
    return contextlib.nullcontext()


def _annotation_rows(con, params: list) -> tuple[str, list]:
    """The SQL and parameters of one output file's annotation rows from one source file, filtered
    on their categories where that lets the scan skip other categories' row groups
    (``select.section_categories``, as the COCO export does)."""
    categories = section_categories(con, params)
    if not categories or len(categories) > FILTER_CATEGORIES:
        return _ROWS["annotations"].format(categories=""), params
    return _ROWS["annotations"].format(categories=" AND list_contains(?, r.category_id)"), params + [categories]


def write_parquet(con, opts: ExportOptions, file_rows: list[tuple], progress: Progress | None = None
                  ) -> dict[str, dict[str, int]]:
    """Write the subset warehouse; returns {table/split=...: {source_file: rows}}."""
    wh = Warehouse(opts.out, opts.dataset, opts.out_storage_options)
    with wh.transaction() as txn:  # a failure removes the parts written so far
        return _write(txn, con, opts, file_rows, progress)


def _write(txn, con, opts: ExportOptions, file_rows: list[tuple], progress: Progress | None):
    wh = txn.warehouse
    old = wh.read_manifest()
    embed = opts.images == "copy"
    if embed:
        _owner_table(con)
        total = con.execute("SELECT count(*) FROM export_image_owner").fetchone()[0]
    done = [0, total if embed else 0]
    id_types = dict(((s, f), t) for s, f, t in con.execute("SELECT split, source_file, id_type FROM raw_info")
                    .fetchall())
    next_number: dict[str, int] = {}
    parts: list[Part] = []
    counter = _Counter({})
    written = []
    for out_split, kind, split, source_file, _doc in file_rows:
        wrote = False
        id_type = id_types.get((split, source_file), "int64")
        for table in TABLES:
            schema = schema_for(table, id_type)
            if table in _WHOLE:
                sql = f"SELECT * FROM raw_{table} WHERE split = ? AND source_file = ? ORDER BY record_index"
                params = [split, source_file]
            elif table == "annotations":
                sql, params = _annotation_rows(con, [out_split, split, source_file])
            else:
                sql, params = _ROWS[table], [out_split, split, source_file]
            add_bytes = embed and table == "images"
            if add_bytes:
                schema = schema.append(pa.field("image_bytes", pa.binary()))
                sql = sql.replace("SELECT r.* FROM raw_images AS r",
                                  "SELECT r.*, o.id IS NOT NULL AS _owner FROM raw_images AS r "
                                  "LEFT JOIN export_image_owner AS o ON o.split = r.split AND o.id = r.id "
                                  "AND o.source_file = r.source_file")

            def batches(sql=sql, params=params, schema=schema, add_bytes=add_bytes, split=split):
                for batch in arrow_batches(con, sql, params, BATCH_ROWS):
                    t = pa.Table.from_batches([batch])
                    if add_bytes:
                        t = _with_bytes(t, split, opts, progress, done)
                    yield t.select(schema.names).cast(schema)

            if out_split not in next_number:
                next_number[out_split] = wh.next_part_number(out_split, old)
            number = next_number[out_split]
            rel = txn.part(table, out_split, number)
            rows = write_part(wh.fs, f"{wh.root}/{rel}", batches(), schema)
            if rows:
                next_number[out_split] = number + 1
                parts.append(Part(table, out_split, source_file, rel, rows, id_type))
                counter.add(f"{opts.dataset}/{table}/split={out_split}", source_file, rows)
                wrote = True
        if wrote:
            written.append((out_split, kind, split, source_file))
    replaced = {(p.split, p.source_file) for p in old.parts} if old else set()
    origin = Warehouse(opts.warehouse, opts.dataset, opts.storage_options).read_manifest()
    urls = {(s.get("split"), s.get("source_file")): s.get("url") for s in (origin.sources if origin else [])}
    sources = [
        {"split": out_split, "source_file": source_file, "kind": kind,
         "id_type": id_types.get((split, source_file), "int64"), "url": urls.get((split, source_file)),
         "exported_from": {"dataset": opts.dataset, "split": split}}
        for out_split, kind, split, source_file in written
    ]
    txn.commit(parts, replaced, sources, derive=summary.derived_parts)
    return counter.rows

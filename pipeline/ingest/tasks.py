"""tasks: the per-chunk task functions of an ingest (no Dask in here).

``ingest_chunk(task)`` reads one chunk's byte range straight from the source, parses,
validates and flattens it (``flatten``), and writes its Parquet parts straight to the
warehouse: only counts and ids come back. An annotations part holds its rows grouped by
category (``cluster_by_category``: by ``category_id``, in source order within a category)
in row groups of ``row_group_rows``, so that a reader selecting a few categories skips the
other groups by their min/max statistics; readers that need the source order sort by
``record_index``, which every row keeps. ``write_info`` writes the per-file ``info`` row.
Each is a plain function that a test calls directly; ``graph`` wires them into a Dask graph
over the files ``plan`` planned.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa

from . import flatten, parse, sources
from ..defaults import DEFAULT_CHUNK_BYTES, DEFAULT_ROW_GROUP_ROWS
from ..errors import BadFileError
from .plan import FilePlan
from .records import FileContext, ImageSizes, rejects_table
from ..schema import schema_for
from .structure import StructureScanner
from ..warehouse import write_part

log = logging.getLogger(__name__)

# sections in the order their chunks are numbered (images before annotations: they need sizes)
SECTION_ORDER = ("licenses", "categories", "images", "annotations")


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    plan_source: sources.SourceFile
    section: str
    start: int
    end: int
    first_index: int
    context: FileContext
    # table -> path (within the warehouse filesystem) this chunk writes, if it has rows
    targets: tuple[tuple[str, str], ...]
    storage_options: tuple = ()
    warehouse_protocol: str = "file"
    sub_batch_bytes: int = DEFAULT_CHUNK_BYTES
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS  # of an annotations part


class TaskMeta(NamedTuple):
    """What one task of an ingest graph is, in the order of the graph's tasks."""

    what: Literal["chunk", "info", "batch"]
    section: str  # the chunk's section; "info" or "batch" for the others
    split: str
    source_file: str  # the document's name, or the per-image set's


@dataclasses.dataclass
class ChunkResult:
    section: str
    source_file: str
    rows: dict[str, int]
    written: dict[str, str]  # table -> path
    rejects: int
    ids: object = None  # np.ndarray (int64) or list[str] of the record ids kept (of the section's space)
    image_sizes: ImageSizes | None = None


_SECTION_SPACE = {"images": "image", "annotations": "annotation", "captions": "annotation", "categories": "category"}


# ---------------------------------------------------------------------------- chunks


@parse.no_cyclic_gc()
def ingest_chunk(task: ChunkTask, sizes: ImageSizes | None = None) -> ChunkResult:
    """Read, parse, validate, flatten and write one chunk; return counts and ids."""
    import fsspec

    fs = fsspec.filesystem(task.warehouse_protocol, **dict(task.storage_options))
    ctx = task.context
    section = task.section
    targets = dict(task.targets)
    per_table: dict[str, list[pa.Table]] = {}
    rejects: list[dict] = []
    ids: list = []
    size_parts: list[ImageSizes] = []
    for buf, offset, first_index in _batches(task):
        if section == "annotations" and ctx.kind != "captions":
            records, geometry = parse.parse_with_geometry(buf, source=ctx.source_file, section=section, offset=offset)
        else:
            records, geometry = parse.parse_chunk(buf, source=ctx.source_file, section=section, offset=offset), None
        flat = flatten.flatten_section(section, records, ctx, sizes, first_index, geometry)
        if section == "images":
            size_parts.append(flat.image_sizes)
        for table, t in flat.tables.items():
            per_table.setdefault(table, []).append(t)
            if table in _SECTION_SPACE:
                ids.append(t.column("id").to_numpy(zero_copy_only=False) if t.schema.field("id").type == pa.int64()
                           else t.column("id").to_pylist())
        rejects += flat.rejects
    if rejects:
        per_table["rejects"] = [rejects_table(rejects)]
    rows, written = {}, {}
    for table, tables in per_table.items():
        path = targets[table]
        if table == "annotations":
            n = write_part(fs, path, [cluster_by_category(tables)], schema_for(table, ctx.id_types),
                           row_group_rows=task.row_group_rows)
        else:
            n = write_part(fs, path, tables, schema_for(table, ctx.id_types))
        rows[table] = n
        if n:
            written[table] = path
    space = _SECTION_SPACE.get(section)
    if space is None or getattr(ctx.id_types, space) == "int64":
        id_arr = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    else:
        id_arr = [x for part in ids for x in part]
    return ChunkResult(
        section=section,
        source_file=ctx.source_file,
        rows=rows,
        written=written,
        rejects=len(rejects),
        ids=id_arr,
        image_sizes=ImageSizes.merge(size_parts, ctx.id_types.image) if section == "images" else None,
    )


def cluster_by_category(tables: list[pa.Table]) -> pa.Table:
    """The rows of a chunk's annotation tables (in source order) grouped by ``category_id``.

    A stable sort: within a category the rows stay in source order, and a chunk's rows are
    the same whatever the number of workers, so its part is too. A missing category id
    sorts last.
    """
    import pyarrow.compute as pc

    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if table.num_rows < 2:
        return table
    order = pc.array_sort_indices(table.column("category_id"), null_placement="at_end")  # a stable sort
    if np.array_equal(order.to_numpy(), np.arange(table.num_rows)):  # grouped already: no copy
        return table
    return table.take(order)


def _batches(task: ChunkTask):
    """(bytes, offset, first_index) pieces of the chunk, each holding whole records.

    A chunk is read in pieces of ``sub_batch_bytes`` so that memory stays bounded even when
    a chunk is large (streamed sources use few, large chunks). A chunk of a seekable source
    is cut by the scan at the first record end past ``chunk_bytes``, a little more than one
    piece: it is read and parsed whole (in pieces it would be scanned once more, and its
    last record parsed and flattened on its own).
    """
    if task.end <= task.start:
        return
    if task.end - task.start <= 2 * task.sub_batch_bytes:
        yield sources.read_range(task.plan_source, task.start, task.end), task.start, task.first_index
        return
    first_index = task.first_index
    pending = b""
    pending_at = task.start
    for block_start, block in _read_pieces(task):
        if not pending:
            pending_at = block_start
        pending += block
        scanner = StructureScanner(depth=0, keep=0, quote_depth=-1)
        positions, depth_after, delta, _ = scanner.feed(pending)
        ends = positions[(depth_after == 0) & (delta < 0)]
        if scanner.in_string or ends.size == 0:
            continue
        cut = int(ends[-1]) + 1
        yield pending[:cut], pending_at, first_index
        first_index += int(ends.size)
        pending = pending[cut:]
        pending_at += cut
    if pending.strip(b" \t\r\n,"):
        yield pending, pending_at, first_index


def _read_pieces(task: ChunkTask):
    step = task.sub_batch_bytes
    if task.plan_source.seekable:
        for a in range(task.start, task.end, step):
            yield a, sources.read_range(task.plan_source, a, min(a + step, task.end))
        return
    with sources.open_document(task.plan_source) as f:
        pos = 0
        while pos < task.start:  # streamed sources: skip to the chunk, bounded memory
            skipped = f.read(min(step, task.start - pos))
            if not skipped:
                raise BadFileError(task.plan_source.name, f"ends at byte {pos}, before byte {task.start}")
            pos += len(skipped)
        while pos < task.end:
            block = f.read(min(step, task.end - pos))
            if not block:
                raise BadFileError(task.plan_source.name, f"ends at byte {pos}, before byte {task.end}")
            yield pos, block
            pos += len(block)


def write_info(plan: FilePlan, path: str, warehouse_protocol: str, storage_options: tuple) -> int:
    import fsspec

    fs = fsspec.filesystem(warehouse_protocol, **dict(storage_options))
    ctx = plan.context
    table = pa.Table.from_pylist(
        [
            {
                "info": plan.info,
                "document": plan.skeleton.decode("utf-8", errors="replace"),
                "id_type": plan.id_types.text(),
                "source_file": ctx.source_file,
                "kind": ctx.kind,
                "record_index": 0,
            }
        ],
        schema=schema_for("info"),
    )
    return write_part(fs, path, [table], schema_for("info"))

"""ingest: the per-file and per-chunk task functions of an ingest (no Dask in here).

``plan_file(source)`` scans one document (``split``) and decides its kind, split, the type
of each id space (``id_types``) and chunks: a ``FilePlan``. ``ingest_chunk(task)`` reads one chunk's byte range straight
from the source, parses, validates and flattens it (``flatten``), and writes its Parquet
parts straight to the warehouse: only counts and ids come back. ``write_info`` writes the
per-file ``info`` row. Each is a plain function that a test calls directly; ``graph``
wires them into a Dask graph.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa

from . import flatten, parse, sources
from .. import id_types
from ..defaults import DEFAULT_CHUNK_BYTES, OnBadRecord, name_problem
from ..errors import BadFileError
from .records import FileContext, ImageSizes, rejects_table
from ..jsontext import dumps_text, loads
from ..schema import IdTypes, Kind, schema_for
from .scan import MAX_RECORD_BYTES, RECORD_SECTIONS, StructureScanner, iter_blocks, record_spans, scan_document
from ..warehouse import write_part

log = logging.getLogger(__name__)

# sections in the order their chunks are numbered (images before annotations: they need sizes)
SECTION_ORDER = ("licenses", "categories", "images", "annotations")
_NAME_KINDS: tuple[tuple[str, Kind], ...] = (
    ("person_keypoints_", "person_keypoints"),
    ("captions_", "captions"),
    ("stuff_", "stuff"),
    ("image_info_", "image_info"),
    ("instances_", "instances"),
)


@dataclasses.dataclass(frozen=True)
class IngestOptions:
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    on_bad_record: OnBadRecord = "error"
    split: str | None = None  # force every source into this split
    max_record_bytes: int = MAX_RECORD_BYTES
    batch_files: int | None = None  # files per task of a per-image set (see per_image)


@dataclasses.dataclass
class FilePlan:
    source: sources.SourceFile
    split: str
    kind: Kind
    id_types: IdTypes  # complete once ``id_types.resolve`` ran over the plans of an ingest
    skeleton: bytes
    info: str | None
    # section -> list of (start, end, first_index)
    chunks: dict[str, list[tuple[int, int, int]]]
    records: dict[str, int]
    context: FileContext


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


# ---------------------------------------------------------------------------- planning


def plan_file(source: sources.SourceFile, opts: IngestOptions) -> FilePlan:
    """Scan one document and decide how to ingest it."""
    chunk_bytes = opts.chunk_bytes if source.seekable else opts.chunk_bytes * 8
    with sources.open_document(source) as f:
        layout = scan_document(
            iter_blocks(f),
            source=source.name,
            chunk_bytes=chunk_bytes,
            max_record_bytes=opts.max_record_bytes,
        )
    try:
        skeleton = loads(layout.skeleton)
    except (ValueError, RecursionError) as err:
        raise BadFileError(source.name, f"not valid JSON outside the record arrays: {err}") from None
    sections = layout.sections
    check_shape(source.name, skeleton, sections)
    first_ann = _first_record(sections.get("annotations"))
    first_img = _first_record(sections.get("images"))
    kind = detect_kind(source.name, first_ann, "annotations" in sections)
    check_categories(source.name, kind, sections)
    split = opts.split or source.split or sources.split_from_name(source.name)
    if not split:
        raise BadFileError(
            source.name,
            "cannot tell the split from the file name (expected e.g. instances_val2017.json); give --split",
        )
    if problem := name_problem("split", split):
        raise BadFileError(source.name, problem)
    # categories are small: read them now to validate annotations against them
    cats: list = []
    for start, end in sections["categories"].chunks() if "categories" in sections else ():
        cats += parse.parse_chunk(sources.read_range(source, start, end), source=source.name,
                                  section="categories", offset=start)
    types, origins = id_types.decide(first_img, first_ann, cats[0] if cats else None)
    ctx = FileContext.of_file(source.name, kind, types, origins, opts.on_bad_record,
                              cats if "categories" in sections else None)
    info = skeleton.get("info")
    return FilePlan(
        source=source,
        split=split,
        kind=kind,
        id_types=types,
        skeleton=layout.skeleton,
        info=dumps_text(info) if "info" in skeleton else None,
        chunks={name: [(a, b, fi) for (a, b), fi in zip(sec.chunks(), sec.first_index)]
                for name, sec in sections.items()},
        records={name: sec.records for name, sec in sections.items()},
        context=ctx,
    )


def check_shape(name: str, top: dict, lists, *, per_image_set: bool = False) -> bool:
    """The one check of a document's top level, for whole documents and per-image sets.

    ``top`` is the top-level object (its record arrays may be emptied), ``lists`` the record
    sections in it that are arrays. True for a per-image document (``{"image": {...},
    "annotations": [...]}``), which only a per-image set (``per_image_set``) may hold.
    """
    for key in RECORD_SECTIONS:
        if key in top and key not in lists and top[key] is not None:
            raise BadFileError(name, f"top-level {key!r} is a {type(top[key]).__name__}, expected a list")
    if "images" not in lists and type(top.get("image")) is dict:
        if per_image_set:
            return True
        raise BadFileError(
            name,
            "a per-image file ({\"image\": {...}, \"annotations\": [...]}, as SA-1B ships): ingest its "
            "directory, or give --batch-files to read it as a per-image set",
        )
    if "images" not in lists and "annotations" not in lists:
        one = " (or one 'image')" if per_image_set else ""
        raise BadFileError(name, f"not a COCO file: it has neither 'images'{one} nor 'annotations' "
                           f"(top-level keys: {', '.join(map(str, top)) or 'none'})")
    if "images" not in lists:
        raise BadFileError(name, "has 'annotations' but no 'images'; annotations need their images")
    return False


def check_categories(name: str, kind: str, lists) -> None:
    """Files of a kind whose annotations name categories must list them."""
    if kind in ("instances", "stuff", "person_keypoints") and "categories" not in lists:
        article = "an" if kind[0] in "aeiou" else "a"
        raise BadFileError(name, f"{article} {kind} file needs 'categories'; the file has none")


def _first_record(section):
    if section is None or not section.head:
        return None
    spans = record_spans(section.head)
    if not spans:
        return None
    a, b = spans[0]
    try:
        return loads(section.head[a:b])
    except (ValueError, RecursionError):
        return None


def detect_kind(name: str, first_annotation, has_annotations: bool) -> Kind:
    """instances | stuff | person_keypoints | captions | image_info, from content first."""
    if not has_annotations:
        return "image_info"
    if isinstance(first_annotation, dict):
        if "caption" in first_annotation:
            return "captions"
        if "keypoints" in first_annotation:
            return "person_keypoints"
        seg = first_annotation.get("segmentation")
        if isinstance(seg, dict) and isinstance(seg.get("counts"), str) and not first_annotation.get("iscrowd"):
            return "stuff"
        return "instances"
    base = name.rsplit("/", 1)[-1]
    for prefix, kind in _NAME_KINDS:
        if base.startswith(prefix):
            return kind
    return "instances"


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


def _batches(task: ChunkTask):
    """(bytes, offset, first_index) pieces of the chunk, each holding whole records.

    A chunk is read in pieces of ``sub_batch_bytes`` so that memory stays bounded even when
    a chunk is large (streamed sources use few, large chunks).
    """
    if task.end <= task.start:
        return
    if task.end - task.start <= task.sub_batch_bytes:
        yield sources.read_range(task.plan_source, task.start, task.end), task.start, task.first_index
        return
    first_index = task.first_index
    pending = b""
    pending_at = task.start
    for block_start, block in _read_pieces(task):
        if not pending:
            pending_at = block_start
        pending += block
        scanner = StructureScanner(depth=0)
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

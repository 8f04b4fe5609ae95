"""plan: one document scanned and planned: its kind, split, id types and chunks.

``plan_file(source)`` scans a document (``scan``), checks its top-level shape
(``check_shape``, the one check that whole documents and per-image set files share),
detects its kind from its first annotation (the file name when it has none), and decides
the type of each id space (``id_types``): a ``FilePlan``. Imports the core, ``sources``,
``scan``, ``parse`` and ``records``.
"""

from __future__ import annotations

import dataclasses

from . import parse, sources
from .. import id_types
from ..defaults import DEFAULT_CHUNK_BYTES, DEFAULT_ROW_GROUP_ROWS, OnBadRecord, name_problem
from ..errors import BadFileError
from ..jsontext import dumps_text, loads
from ..schema import IdTypes, Kind
from .records import FileContext
from .scan import MAX_RECORD_BYTES, RECORD_SECTIONS, iter_blocks, record_spans, scan_document

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
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS  # rows per row group of an annotations part


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

"""filesets: a directory or glob of many small JSON documents, ingested as one source.

Input: a source URL that lists many small COCO-style documents, as SA-1B ships (one
``sa_<id>.json`` per image), or a single file when ``batch_files`` asks for it. Output: a ``FileSet`` (the set's name, its split, its files
grouped into batches) and ``ingest_batch``, the task function that reads a whole batch,
flattens every document of it and writes *one part per table for the batch*: a set of
millions of files becomes thousands of tasks and parts, not millions.

When a source is a per-image set (``find_sets``): a directory (one level of
sub-directories included) or a glob whose documents (``*.json``, ``*.json.gz``) are each
no larger than one chunk (``chunk_bytes``), and either there are at least two of them and
no name carries a split (``sa_1.json``, not ``instances_val2017.json``), or
``batch_files`` was given. Everything else is ingested document by document (``tasks``).
Hidden files and directories (``.name``) are left out, globs included.

Each document is either a COCO file (``images``, ``annotations``, ``categories``, ...)
or the per-image format ``{"image": {...}, "annotations": [...]}``: a single image
object, whose id may be given as ``image_id`` (SA-1B); annotations without ``image_id``
belong to that image; segmentations may be compressed RLE ``{"size", "counts"}``. A
per-image document needs no ``categories``; its masks count as ``instances``.

Guarantees: every file of a set lands in one split (``--split``, else the source's
``split``, else the split all its file names carry, else ``train``); rows keep their own
file name in ``source_file``, and each file gets its ``info`` row (its document with the record arrays emptied, a single
``image`` becoming ``images``), so an export writes the set back as COCO JSON. The set is
the unit the manifest replaces on re-ingest. Ids must be unique within each file, and
image ids among the set's files of one kind. Batches are consecutive files in sorted order: the same input
writes the same parts.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import fsspec
import numpy as np
import pyarrow as pa

from . import flatten, parse, sources
from .. import id_types
from ..defaults import OnBadRecord, name_problem
from ..errors import BadFileError, SourceError
from .records import FileContext, rejects_table
from ..jsontext import dumps_text
from ..schema import IdTypes, schema_for
from .scan import RECORD_SECTIONS
from .plan import check_categories, check_shape, detect_kind
from .tasks import TaskMeta
from .validate import check_unique_ids
from ..warehouse import write_part

log = logging.getLogger(__name__)

DEFAULT_SPLIT = "train"
DEFAULT_BATCH_FILES = 1000
# every table a batch may write (the graph adds ``rejects``)
BATCH_TABLES = ("licenses", "categories", "images", "annotations", "keypoints", "captions", "info")
_SUFFIXES = (".json", ".json.gz")


@dataclasses.dataclass(frozen=True)
class SetFile:
    url: str
    name: str  # base name without .gz: the rows' source_file
    size: int


@dataclasses.dataclass(frozen=True)
class FileSet:
    """The documents one source URL lists, ingested together."""

    name: str  # the manifest's source unit: the directory's name, or the glob's last part
    url: str
    split: str
    files: tuple[SetFile, ...]
    storage_options: dict = dataclasses.field(default_factory=dict, hash=False)

    def batches(self, chunk_bytes: int, batch_files: int | None) -> list[tuple[SetFile, ...]]:
        """Consecutive files, at most ``batch_files`` of them and ``chunk_bytes`` bytes a batch."""
        limit = batch_files or DEFAULT_BATCH_FILES
        out: list[tuple[SetFile, ...]] = []
        current: list[SetFile] = []
        size = 0
        for f in self.files:
            if current and (len(current) >= limit or size + f.size > chunk_bytes):
                out.append(tuple(current))
                current, size = [], 0
            current.append(f)
            size += f.size
        if current:
            out.append(tuple(current))
        return out


@dataclasses.dataclass(frozen=True)
class BatchTask:
    set_name: str
    files: tuple[SetFile, ...]
    targets: tuple[tuple[str, str], ...]  # table -> path (within the warehouse filesystem)
    source_storage_options: tuple = ()
    storage_options: tuple = ()  # the warehouse's
    warehouse_protocol: str = "file"
    on_bad_record: OnBadRecord = "error"


@dataclasses.dataclass
class BatchResult:
    set_name: str
    rows: dict[str, int]
    written: dict[str, str]  # table -> path
    rejects: int
    id_types: IdTypes  # the batch's, complete (spaces no document decides: int64)
    # space -> (document, what in it decided the space's type); spaces no document decides absent
    id_origins: dict
    image_ids: dict[str, object]  # kind -> np.ndarray (int64) or list[str]
    kinds: set[str]
    records: dict[str, int]


# ---------------------------------------------------------------------------- finding sets


def find_sets(entries: list, *, chunk_bytes: int, batch_files: int | None, split: str | None,
              storage_options: dict | None = None) -> tuple[list[FileSet], list]:
    """Split source entries (URLs or ``config.Source``) into per-image sets and the rest."""
    sets: list[FileSet] = []
    rest: list = []
    for entry in entries:
        spec = None if isinstance(entry, str) else entry
        url = entry if spec is None else spec.url
        so = dict(storage_options or {}) if spec is None else dict(spec.storage_options)
        plain = spec is None or not (spec.md5 or spec.sha256 or spec.members)
        listed = _listing(url, so, single=bool(batch_files)) if plain else None
        if listed and all(size <= chunk_bytes for _, _, size in listed) and (
            batch_files or (len(listed) >= 2 and not any(sources.split_from_name(n) for _, n, _ in listed))
        ):
            name = sources.basename(url.rstrip("/")) or url
            files = tuple(SetFile(u, n, size) for u, n, size in listed)
            _check_names(url, files)
            named = {sources.split_from_name(n) for _, n, _ in listed}
            set_split = split or (spec.split if spec else None) or (
                named.pop() if len(named) == 1 and None not in named else DEFAULT_SPLIT)
            if problem := name_problem("split", set_split):
                raise SourceError(url, problem)
            sets.append(FileSet(name, url, set_split, files, so))
            log.info("%s: %d small documents, ingested as one per-image set", url, len(files))
        else:
            if listed and batch_files:
                log.warning("%s: some documents are larger than %d bytes; ingesting them one by one",
                            url, chunk_bytes)
            rest.append(entry)
    return sets, rest


def _listing(url: str, so: dict, single: bool = False) -> list[tuple[str, str, int]] | None:
    """(url, name, size) of the documents a directory or glob (or, if ``single``, a file) lists,
    sorted; None otherwise."""
    if url.startswith("zip://") or url.lower().startswith(("http://", "https://")):
        return None
    if fsspec.utils.get_protocol(url) in ("file", "local"):
        url = os.path.abspath(url[len("file://"):] if url.startswith("file://") else url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **so)
        if fs.isdir(path):
            found = _walk(fs, path)
        elif any(c in url for c in "*?[") and not fs.exists(path):
            fixed = path[: min(path.find(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
            found = ((p, info) for p, info in fs.glob(path, detail=True).items()  # `*` matches ".x" here
                     if not any(part.startswith(".") for part in p[len(fixed):].split("/")))
        elif single and fs.isfile(path):
            found = [(path, fs.info(path))]  # a set of one, when --batch-files asks for it
        else:
            return None
        entries = [(p, info.get("size")) for p, info in found if info.get("type") != "directory"]
    except (OSError, ValueError):
        return None  # let ``sources.resolve`` report it
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    out = []
    for p, size in sorted(entries):
        lower = p.lower()
        if lower.endswith(".zip"):
            return None  # archives hold large documents: not a per-image set
        if lower.endswith(_SUFFIXES):
            if size is None:
                return None
            out.append((p if local else fs.unstrip_protocol(p), sources.doc_name(sources.basename(p)), int(size)))
    return out


def _walk(fs, path: str):
    """(path, info) of the files in ``path`` and its sub-directories, hidden ones left out.

    Directory by directory, so that only one listing's details are held at a time
    (SA-1B: a thousand directories of 11 000 files).
    """
    for _root, dirs, files in fs.walk(path, maxdepth=2, detail=True):
        for name in [d for d in dirs if d.startswith(".")]:
            del dirs[name]
        for name, info in files.items():
            if not name.startswith("."):
                yield info["name"], info


def _check_names(url: str, files: tuple[SetFile, ...]) -> None:
    seen: dict[str, str] = {}
    for f in files:
        if f.name in seen:
            raise SourceError(url, f"two files are both named {f.name}: {seen[f.name]} and {f.url}; "
                              "the files of a per-image set need distinct names")
        seen[f.name] = f.url


# ---------------------------------------------------------------------------- the task


@parse.no_cyclic_gc()
def ingest_batch(task: BatchTask) -> BatchResult:
    """Read, parse, validate, flatten and write a batch of documents; return counts and image ids."""
    wfs = fsspec.filesystem(task.warehouse_protocol, **dict(task.storage_options))
    per_table: dict[str, list[pa.Table]] = {}
    rejects: list[dict] = []
    image_ids: dict[str, list] = {}
    kinds: set[str] = set()
    records: dict[str, int] = {}
    decided: id_types.Resolved = {}
    for f, data in zip(task.files, _read_all(task)):
        doc = flatten_document(parse.parse_document(data, f.name), f.name, task.on_bad_record)
        decided = id_types.merge([id_types.Decided(f.name, doc.id_types, doc.id_origins)], decided)
        for table, t in doc.tables.items():
            per_table.setdefault(table, []).append(t)
        rejects += doc.rejects
        kinds.add(doc.kind)
        for section, n in doc.records.items():
            records[section] = records.get(section, 0) + n
        image_ids.setdefault(doc.kind, []).append(doc.image_ids)
    if rejects:
        per_table["rejects"] = [rejects_table(rejects)]
    targets = dict(task.targets)
    rows, written = {}, {}
    types = id_types.complete(id_types.Decided(task.set_name, IdTypes(), {}), decided)
    for table, tables in per_table.items():
        schema = schema_for(table, types)
        # one row group for the batch, not one per file
        n = write_part(wfs, targets[table], [pa.concat_tables([t.cast(schema) for t in tables])], schema)
        rows[table] = n
        if n:
            written[table] = targets[table]
    ids = {kind: [x for part in parts for x in part] if types.image == "string" else np.concatenate(parts)
           for kind, parts in image_ids.items()}
    origins = {space: (name, origin) for space, (_, name, origin) in decided.items()}
    return BatchResult(task.set_name, rows, written, len(rejects), types, origins, ids, kinds, records)


def _read_all(task: BatchTask) -> list[bytes]:
    if not task.files:
        return []
    fs, _ = fsspec.core.url_to_fs(task.files[0].url, **dict(task.source_storage_options))
    paths = [fs._strip_protocol(f.url) for f in task.files]
    try:
        got = fs.cat(paths, on_error="return")  # object stores: concurrent requests
    except FileNotFoundError:
        got = {}
    out = []
    for f, p in zip(task.files, paths):
        data = got.get(p)
        if isinstance(data, FileNotFoundError) or data is None:
            raise SourceError(f.url, "no such file (it was listed when the ingest started)")
        if isinstance(data, Exception):
            raise SourceError(f.url, f"cannot read: {data}")
        out.append(data)
    return out


@dataclasses.dataclass
class FlatDocument:
    tables: dict[str, pa.Table]
    rejects: list[dict]
    id_types: IdTypes  # complete: spaces no record decides are int64
    id_origins: dict  # space -> what decided its type (spaces no record decides absent)
    kind: str
    image_ids: object
    records: dict[str, int]


def flatten_document(doc, name: str, on_bad_record: OnBadRecord = "error") -> FlatDocument:
    """One whole document (COCO or per-image format) → its tables, through the same
    ``FileContext.of_file`` and ``flatten.flatten_section`` as a document's chunks."""
    if type(doc) is not dict:
        what = "a list" if type(doc) is list else "not a JSON object"
        raise BadFileError(name, f"the top level is {what}; expected a COCO JSON object {{...}}")
    sections = {key: doc[key] for key in RECORD_SECTIONS if type(doc.get(key)) is list}
    per_image = check_shape(name, doc, sections, per_image_set=True)
    skeleton = doc
    if per_image:
        sections["images"], sections["annotations"] = _per_image_records(name, doc["image"], doc.get("annotations"))
        skeleton = {("images" if k == "image" else k): v for k, v in doc.items()}
    anns = sections.get("annotations")
    kind = detect_kind(name, anns[0] if anns else None, "annotations" in sections)
    if per_image and kind == "stuff":
        kind = "instances"  # SA-1B: every mask is compressed RLE without iscrowd; they are instances
    if not per_image:
        check_categories(name, kind, sections)
    cats = sections.get("categories")
    types, origins = id_types.decide(*(sections[k][0] if sections.get(k) else None
                                       for k in ("images", "annotations", "categories")))
    ctx = FileContext.of_file(name, kind, types, origins, on_bad_record, cats)
    tables: dict[str, pa.Table] = {}
    rejects: list[dict] = []
    images = flatten.flatten_section("images", sections["images"], ctx)
    parts = [images] + [flatten.flatten_section(s, sections[s], ctx, images.image_sizes)
                        for s in ("licenses", "categories", "annotations") if s in sections]
    for flat in parts:
        for table, t in flat.tables.items():
            _check_unique(name, table, t)
            tables[table] = t
        rejects += flat.rejects
    tables["info"] = pa.Table.from_pylist([{
        "info": dumps_text(doc["info"]) if "info" in doc else None,
        "document": dumps_text({k: ([] if k in sections else v) for k, v in skeleton.items()}),
        "id_type": types.text(),
        "source_file": name,
        "kind": kind,
        "record_index": 0,
    }], schema=schema_for("info"))
    ids = tables["images"].column("id")
    return FlatDocument(
        tables=tables,
        rejects=rejects,
        id_types=types,
        id_origins=origins,
        kind=kind,
        image_ids=ids.to_numpy(zero_copy_only=False) if types.image == "int64" else ids.to_pylist(),
        records={k: len(v) for k, v in sections.items()},
    )


def _per_image_records(name: str, image: dict, annotations) -> tuple[list, list]:
    if annotations is not None and type(annotations) is not list:
        raise BadFileError(name, f"'annotations' is a {type(annotations).__name__}, expected a list")
    image_id = image["id"] if "id" in image else image.get("image_id")
    if "id" not in image and "image_id" in image:
        image = {"id": image_id, **image}  # SA-1B names the image's id image_id
    anns = [{**a, "image_id": image_id} if type(a) is dict and "image_id" not in a else a
            for a in annotations or ()]
    return [image], anns


def _check_unique(name: str, table: str, t: pa.Table) -> None:
    if table in ("images", "annotations", "captions", "categories") and t.num_rows > 1:
        check_unique_ids(name, table, [t.column("id").to_pylist()])


def describe_sets(sets: list[FileSet], meta: list[TaskMeta], results: list, set_types: dict[str, str], now: str) -> list[dict]:
    """The manifest's ``sources`` entries of the sets: one per set, not one per file."""
    out = []
    for s in sets:
        done = [res for m, res in zip(meta, results) if m.what == "batch" and m.source_file == s.name]
        kinds = sorted({k for r in done for k in r.kinds})
        records: dict[str, int] = {}
        for r in done:
            for k, n in r.records.items():
                records[k] = records.get(k, 0) + n
        out.append({
            "split": s.split,
            "source_file": s.name,
            "url": s.url,
            "kind": kinds[0] if len(kinds) == 1 else ",".join(kinds),
            "id_type": set_types[s.name],
            "records": records,
            "files": len(s.files),
            "batches": len(done),
            "ingested_at": now,
        })
    return out

"""detections: a COCO results file (a JSON list of detections) → the ``predictions`` table.

Input: a results file as pycocotools' ``COCO.loadRes`` reads it, ``[{"image_id", "category_id",
"score", "bbox" | "segmentation" | "keypoints"}, ...]`` (any source URL, .gz, zip member),
a run name, and the warehouse whose ground truth the detections are for.
Output: ``<dataset>/predictions/run=<run>/part-NNNNN.parquet`` (one row per detection,
schema ``predictions``), bad records in ``rejects/split=<run>/``, committed atomically
together; re-ingesting a run replaces all of it (and the match tables ``evaluate`` wrote).

Guarantees:

- each detection gets what ``loadRes`` would give it: ``id`` = position in the file + 1,
  ``area`` = box w*h when a box is given, else the mask's pixels, else the keypoints'
  extent; a missing ``bbox`` is derived from the mask or the keypoints;
- masks are encoded exactly as ground-truth masks (``encode``'s validation and encoder:
  polygons are drawn on the height and width of the ground-truth image);
- a detection on an image that is not in the ground-truth split, of an unknown category,
  without a finite score, or with a malformed box, mask or keypoints raises
  ``BadRecordError`` naming file, position and problem, or becomes a ``rejects`` row with
  ``--on-bad-record skip``.

The file is scanned once and cut into chunks of whole records by ``ingest.scan.scan_list``
(the chunker of documents' record arrays, with its limits); each chunk is one Dask task that
reads its byte range, validates, encodes and writes its own part, so memory stays bounded by
the chunk size.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import time
import uuid

import dask
import duckdb
import numpy as np
import pyarrow as pa

from ..ingest import parse, sources
from .. import masks
from ..defaults import DEFAULT_CACHE_DIR, DEFAULT_CHUNK_BYTES, OnBadRecord, name_problem
from ..errors import BadFileError, ConfigError, SourceError, WarehouseError
from ..ingest.encode import MaskRows, classify_segmentation
from ..ingest.records import (
    BadValue, Collector, FileContext, Flat, ImageSizes, arrow_table, check_id, check_object, check_keypoints, extra_text, is_bbox,
    is_num, rejects_table, short,
)
from ..id_types import words
from ..schema import schema_for
from ..ingest.scan import iter_blocks, scan_list
from ..query.views import raw_relation_sql, register_filesystem
from ..warehouse import Part, Transaction, Warehouse, write_part

log = logging.getLogger(__name__)

KIND = "results"
SECTION = "detection"  # how errors and rejects name a record: "detection #3"
KNOWN_KEYS = ("image_id", "category_id", "score", "bbox", "segmentation", "keypoints")


@dataclasses.dataclass(frozen=True)
class ResultsTask:
    """One chunk of a results file: bytes ``[start, end)`` holding whole records."""

    source: sources.SourceFile
    start: int
    end: int
    first_index: int
    split: str
    context: FileContext
    predictions_path: str
    rejects_path: str
    warehouse_protocol: str = "file"
    storage_options: tuple = ()
    predictions_rel: str = ""  # the parts' paths inside the warehouse, for the manifest
    rejects_rel: str = ""


@dataclasses.dataclass
class ResultsReport:
    run: str
    split: str
    source_file: str
    detections: int
    rejects: int
    version: int
    seconds: float

    def lines(self) -> list[str]:
        out = [f"run {self.run}: {self.detections} detections from {self.source_file} on split {self.split} "
               f"(version {self.version}, {self.seconds:.1f} s)"]
        if self.rejects:
            out.append(f"  {self.rejects} bad records skipped (see the rejects table)")
        return out


# ---------------------------------------------------------------------------- one chunk


def flatten_detections(records: list, ctx: FileContext, sizes: ImageSizes, split: str,
                       first_index: int = 0) -> Flat:
    """Validate and encode detections into a ``predictions`` table (and rejects)."""
    col = Collector(ctx, SECTION, first_index)
    image_ids = [r.get("image_id") if type(r) is dict else None for r in records]
    found, heights, widths = sizes.lookup(image_ids)
    keep: list[int] = []
    rows: dict[str, list] = {k: [] for k in ("image_id", "category_id", "score", "bbox", "keypoints", "extra")}
    segs = MaskRows()
    for i, rec in enumerate(records):
        try:
            check_object(rec)
            iid = check_id(rec.get("image_id"), ctx, "image", "image_id")
            if not found[i]:
                raise BadValue(f"image_id {iid!r} is not an image of split {split}")
            cid = check_id(rec.get("category_id"), ctx, "category", "category_id")
            if ctx.category_ids is not None and cid not in ctx.category_ids:
                raise BadValue(f"category_id {cid!r} is not a category of split {split}")
            score = rec.get("score")
            if score is None:
                raise BadValue("score is missing")
            if not is_num(score):
                raise BadValue(f"score {short(score)} is not a finite number")
            bbox = rec.get("bbox")
            if bbox is not None and bbox != []:
                if not is_bbox(bbox):
                    raise BadValue(f"bbox {short(bbox)} is not 4 finite numbers [x, y, width, height]")
                if bbox[2] < 0 or bbox[3] < 0:
                    raise BadValue(f"bbox {short(bbox)} has a negative width or height")
                bbox = [float(x) for x in bbox]
            else:
                bbox = None
            kind, value = classify_segmentation(rec, int(heights[i]), int(widths[i]))
            kps = None if rec.get("keypoints") is None else check_keypoints(
                rec["keypoints"], cid, ctx, detection=True)
            if bbox is None and kind in ("none", "empty") and kps is None:
                raise BadValue("has no bbox, segmentation or keypoints")
        except BadValue as err:
            col.bad(i, rec, str(err))
            continue
        keep.append(i)
        for k, v in zip(rows, (iid, cid, float(score), bbox, kps, extra_text(rec, KNOWN_KEYS))):
            rows[k].append(v)
        segs.append(kind, value, int(heights[i]), int(widths[i]))

    checked = _check_rles_at_once(segs.kind, segs.value)
    m = segs.encode()
    rle_counts, rle_size, fmt, bad = m.counts.to_pylist(), m.size.to_pylist(), m.fmt.to_pylist(), m.bad
    for j in checked:
        rle_counts[j], rle_size[j], fmt[j] = segs.value[j][0], list(segs.value[j][1]), "rle"
    if bad:
        good = col.drop_bad(bad, keep, records)
        keep = [keep[j] for j in good]
        rows = {k: [v[j] for j in good] for k, v in rows.items()}
        rle_counts, rle_size, fmt = ([x[j] for j in good] for x in (rle_counts, rle_size, fmt))

    n = len(keep)
    have_mask = np.asarray([c is not None for c in rle_counts], dtype=bool)
    mask_area = np.zeros(n, dtype=np.int64)
    bboxes = rows["bbox"]
    area = np.full(n, np.nan)
    if have_mask.any():
        idx = np.flatnonzero(have_mask)
        counts = [rle_counts[j] for j in idx]
        sizes_ = [rle_size[j] for j in idx]
        mask_area[idx] = masks.area(counts, sizes_)
        derived = masks.bbox(counts, sizes_)
        for k, j in enumerate(idx.tolist()):
            if bboxes[j] is None:
                bboxes[j] = derived[k].tolist()
                area[j] = float(mask_area[j])
    for j in range(n):
        if bboxes[j] is None:  # keypoints only: loadRes' box around the keypoints
            xs, ys = rows["keypoints"][j][0::3], rows["keypoints"][j][1::3]
            x0, x1, y0, y1 = float(min(xs)), float(max(xs)), float(min(ys)), float(max(ys))
            bboxes[j] = [x0, y0, x1 - x0, y1 - y0]
            area[j] = (x1 - x0) * (y1 - y0)
        elif np.isnan(area[j]):
            area[j] = float(bboxes[j][2]) * float(bboxes[j][3])
    columns = {
        "id": pa.array(np.asarray(keep, dtype=np.int64) + first_index + 1, pa.int64()),
        "image_id": rows["image_id"],
        "category_id": rows["category_id"],
        "score": pa.array(rows["score"], pa.float64()),
        "bbox": pa.array(bboxes, pa.list_(pa.float64())),
        "area": pa.array(area, pa.float64()),
        "rle_counts": pa.array(rle_counts, pa.string()),
        "rle_size": pa.array(rle_size, pa.list_(pa.int32())),
        "mask_area": pa.array(mask_area, pa.int64(), mask=~have_mask),
        "keypoints": pa.array(rows["keypoints"], pa.list_(pa.float64())),
        "segmentation_format": fmt,
        "split": pa.array([split] * n, pa.string()),
        "extra": rows["extra"],
    }
    return Flat({"predictions": arrow_table("predictions", columns, ctx, first_index, keep)}, col.rejects)


def _check_rles_at_once(seg_kind: list, seg_value: list) -> list[int]:
    """Validate the compressed RLE masks of a chunk in one batch; their rows are marked done
    (kind "none": the encoder leaves them to the caller).

    Results files are mostly RLE masks; checking them one call each costs more than the
    rest of the ingest. When the batch has a bad mask, nothing is marked and the encoder
    checks them one by one, which names the bad one.
    """
    rows = [j for j, k in enumerate(seg_kind) if k == "rle"]
    if len(rows) < 2:
        return []
    try:
        masks.area([seg_value[j][0] for j in rows], [seg_value[j][1] for j in rows])
    except masks.InvalidMask:
        return []
    for j in rows:
        seg_kind[j] = "none"
    return rows


@parse.no_cyclic_gc()
def ingest_results_chunk(task: ResultsTask, sizes: ImageSizes) -> dict:
    """Read, parse, validate, encode and write one chunk; return row counts."""
    import fsspec

    fs = fsspec.filesystem(task.warehouse_protocol, **dict(task.storage_options))
    ctx = task.context
    buf = sources.read_range(task.source, task.start, task.end)
    records = parse.parse_chunk(buf, source=ctx.source_file, section="results", offset=task.start)
    flat = flatten_detections(records, ctx, sizes, task.split, task.first_index)
    rows = write_part(fs, task.predictions_path, [flat.tables["predictions"]], schema_for("predictions", ctx.id_types))
    rejected = write_part(fs, task.rejects_path, [rejects_table(flat.rejects)], schema_for("rejects"))
    return {"predictions": rows, "rejects": rejected}


# ---------------------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """What validating detections needs to know about one split of the ground truth."""

    split: str
    sizes: ImageSizes
    category_ids: frozenset
    category_keypoints: dict


def _gt_split(wh: Warehouse, manifest, split: str | None, first_image_ids: list) -> GroundTruth:
    id_types = manifest.id_types()
    splits = manifest.splits()
    con = duckdb.connect()
    try:
        register_filesystem(con, wh)
        images = raw_relation_sql(wh, manifest, "images")
        cats = raw_relation_sql(wh, manifest, "categories")
        if split is None:
            with_images = [r[0] for r in con.execute(f"SELECT DISTINCT split FROM ({images}) ORDER BY 1").fetchall()]
            if len(with_images) == 1:
                split = with_images[0]
            else:
                probe = [i for i in first_image_ids if isinstance(i, (int, str))][:1000]
                hits = con.execute(
                    f"SELECT split, count(DISTINCT id) FROM ({images}) WHERE list_contains(?, id) "
                    "GROUP BY split ORDER BY 2 DESC, 1", [probe]).fetchall() if probe else []
                # the split holding most of the first detections' images (bad ids become bad records)
                best = [s for s, n in hits if n == hits[0][1]] if hits else []
                if len(best) != 1:
                    raise ConfigError(
                        f"cannot tell which split the detections are for (splits with the most of the first "
                        f"{len(set(probe))} image ids: {', '.join(best) or 'none'}); give --split")
                split = best[0]
        elif split not in splits:
            raise ConfigError(f"split {split!r} is not in the warehouse (splits: {', '.join(splits) or 'none'})")
        img = con.execute(
            f"SELECT id, any_value(height), any_value(width) FROM ({images}) WHERE split = ? GROUP BY id",
            [split]).fetchall()
        cat_rows = con.execute(
            f"SELECT id, max(len(keypoints)) FROM ({cats}) WHERE split = ? GROUP BY id", [split]).fetchall()
    finally:
        con.close()
    ids = [r[0] for r in img]
    sizes = ImageSizes(ids, [r[1] if r[1] is not None else -1 for r in img],
                       [r[2] if r[2] is not None else -1 for r in img], id_types.image)
    return GroundTruth(split, sizes, frozenset(r[0] for r in cat_rows), {r[0]: r[1] for r in cat_rows if r[1]})


def _first_image_ids(sf: sources.SourceFile, chunk: tuple[int, int, int] | None) -> list:
    if chunk is None:
        return []
    start, end, _ = chunk
    buf = sources.read_range(sf, start, min(end, start + (4 << 20)))
    cut = buf.rfind(b"}")
    try:
        records = parse.parse_chunk(buf[:cut + 1], source=sf.name, section="results", offset=start)
    except BadFileError:
        return []
    return [r.get("image_id") for r in records if isinstance(r, dict)]


def run_ingest_results(
    url: str,
    *,
    run: str,
    warehouse: str,
    dataset: str,
    split: str | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    on_bad_record: OnBadRecord = "error",
    cache_dir: str = DEFAULT_CACHE_DIR,
    storage_options: dict | None = None,
    progress=None,
) -> ResultsReport:
    """Ingest one results file as run ``run``, replacing what that run had."""
    if problem := name_problem("run", run):
        raise ConfigError(problem)
    wh = Warehouse(warehouse, dataset, storage_options)
    with wh.transaction() as txn:  # from numbering the parts to the commit, as an ingest
        return _ingest_results(txn, url, run=run, split=split, workers=workers, scheduler=scheduler,
                               chunk_bytes=chunk_bytes, on_bad_record=on_bad_record, cache_dir=cache_dir,
                               progress=progress)


def _ingest_results(txn: Transaction, url: str, *, run, split, workers, scheduler, chunk_bytes, on_bad_record,
                    cache_dir, progress) -> ResultsReport:
    from ..ingest.cluster import dask_client
    from ..ingest.run import compute

    t0 = time.perf_counter()
    wh = txn.warehouse
    manifest = wh.read_manifest()
    if manifest is None or not manifest.splits():
        raise WarehouseError(f"{wh.url('')}: no ground truth here; run `cocolake ingest` first")
    if run in manifest.splits():
        raise ConfigError(f"run name {run!r} is a split of the ground truth; choose another name")
    found = sources.resolve([url], cache_dir=cache_dir)
    if len(found) != 1:
        raise SourceError(url, f"expected one results file, found {len(found)}")
    sf = found[0]
    if not sf.seekable:
        chunk_bytes *= 8  # streamed sources are re-read up to each chunk: fewer, larger chunks
    with sources.open_document(sf) as f:
        listed = scan_list(iter_blocks(f), source=sf.name, chunk_bytes=chunk_bytes)
    n_records = listed.records
    # an empty list is one empty chunk, which needs no task
    chunks = [(a, b, first) for (a, b), first in zip(listed.chunks(), listed.first_index) if b > a]
    gt = _gt_split(wh, manifest, split, _first_image_ids(sf, chunks[0] if chunks else None))
    id_types = manifest.id_types()  # detections join the ground truth: its types, space by space
    id_type = id_types.text()
    ctx = FileContext(source_file=sf.name, kind=KIND, id_types=id_types, on_bad_record=on_bad_record,
                      category_keypoints=gt.category_keypoints, category_ids=gt.category_ids,
                      id_origins={space: f"the ground truth's {space} ids are {words(getattr(id_types, space))}"
                                  for space in ("image", "category")})
    base = wh.next_part_number(run, manifest)
    storage = tuple(sorted(wh.storage_options.items()))
    tasks = []
    for k, (start, end, first) in enumerate(chunks):
        pred_rel = Warehouse.part_rel("predictions", run, base + k)
        rej_rel = Warehouse.part_rel("rejects", run, base + k)
        tasks.append(ResultsTask(sf, start, end, first, gt.split, ctx, f"{wh.root}/{pred_rel}",
                                 f"{wh.root}/{rej_rel}", wh.protocol, storage, pred_rel, rej_rel))
    txn.will_write(rel for t in tasks for rel in (t.predictions_rel, t.rejects_rel))
    key = uuid.uuid4().hex[:12]  # task keys unique per call: one Dask cluster may serve several runs
    sizes = dask.delayed(gt.sizes, name=f"sizes-{run}-{key}")
    graph = [dask.delayed(ingest_results_chunk, pure=True)(t, sizes, dask_key_name=f"results-{run}-{k}-{key}")
             for k, t in enumerate(tasks)]
    with dask_client(workers, scheduler) as client:  # closed before the transaction removes parts
        counts = compute(graph, client, progress, "ingest") if graph else []
    parts = []
    for t, c in zip(tasks, counts):
        if c["predictions"]:
            parts.append(Part("predictions", run, sf.name, t.predictions_rel, c["predictions"], id_type))
        if c["rejects"]:
            parts.append(Part("rejects", run, sf.name, t.rejects_rel, c["rejects"], id_type))
    replaced = {(run, p.source_file) for p in manifest.parts if p.split == run} | {(run, sf.name)}
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    meta = {"split": run, "source_file": sf.name, "url": sf.url, "kind": KIND, "id_type": id_type,
            "records": {"detections": n_records}, "gt_split": gt.split, "ingested_at": now}
    committed = txn.commit(parts, replaced, [meta])
    return ResultsReport(
        run=run, split=gt.split, source_file=sf.name,
        detections=sum(c["predictions"] for c in counts), rejects=sum(c["rejects"] for c in counts),
        version=committed.version, seconds=time.perf_counter() - t0,
    )

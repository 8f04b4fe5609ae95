"""hf: the subset as Parquet shards of one row per image, as Hugging Face ``datasets`` reads them.

Input: a connection prepared by ``select.build_subset`` (and ``classes.apply``), the class
map, the options. Output: ``<out>/data/<split>-NNNNN-of-NNNNN.parquet``, one row per image
of the split in image-id order:

- ``image``: ``{bytes, path}``; with ``--images copy`` the encoded file and its
  ``file_name``; with ``--images none`` no bytes and ``path`` where the image is: an
  absolute local path, ``zip://<member>::<archive>``, or a URL (the ``coco_url`` without an
  image root). ``datasets`` opens a relative path against the working directory, so none
  is written;
- ``image_id``, ``file_name``, ``width``, ``height``;
- ``objects``: a struct of lists, one entry per object (the layout of ``datasets``'
  ``Sequence({...})``): ``id``, ``bbox`` ``[x, y, w, h]``, ``category`` (a class index of
  the ``ClassLabel`` whose names are the class map's targets in id order), ``area``,
  ``iscrowd``, ``segmentation`` (compressed COCO RLE ``{counts, size}``, null without a
  mask) and, when the export has keypoints, ``keypoints`` (``[x1, y1, v1, ...]``, null for
  an object without) and ``num_keypoints``;
- ``captions`` (a list of strings) when the export has captions.

Every shard has the same schema, with the ``datasets`` features in the schema metadata
(key ``huggingface``: ``{"info": {"features": ...}}``), written here as JSON in the
``Sequence`` form, which ``datasets`` 3.x reads as it is and 4.x and later translate to
``List``; ``datasets`` is not imported. Row
groups hold ``ROW_GROUP_ROWS`` rows (``ROW_GROUP_ROWS_WITH_BYTES`` with embedded images) so
that streaming reads a few MB at a time; a shard is closed past ``MAX_SHARD_BYTES``.
"""

from __future__ import annotations

import json
import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq

from . import images as image_files
from .options import ExportError, ExportOptions, Progress
from .select import arrow_batches, subset_categories

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 1_000
ROW_GROUP_ROWS_WITH_BYTES = 100
MAX_SHARD_BYTES = 500 * 1024 * 1024

_IMAGES_SQL = """
WITH imgs AS (
    SELECT DISTINCT e.out_split, i.split, i.id, i.file_name, i.width, i.height, i.coco_url
    FROM export_images AS e JOIN images AS i ON i.split = e.split AND i.id = e.id
    WHERE e.out_split = $1
),
kps AS (
    SELECT k.split, k.annotation_id, first(k.keypoints) AS keypoints, first(k.num_keypoints) AS num_keypoints
    FROM raw_keypoints AS k
    SEMI JOIN export_annotations AS e ON e.split = k.split AND e.id = k.annotation_id AND e.out_split = $1
    GROUP BY k.split, k.annotation_id
),
anns AS (
    SELECT a.split, a.image_id,
        list(struct_pack(id := a.id, bbox := a.bbox, category_id := a.category_id, area := a.area,
                         iscrowd := a.iscrowd, counts := a.rle_counts, size := a.rle_size,
                         keypoints := k.keypoints, num_keypoints := k.num_keypoints)
             ORDER BY a.source_file, a.record_index) AS objects
    FROM annotations AS a
    JOIN export_annotations AS e ON e.split = a.split AND e.source_file = a.source_file AND e.id = a.id
    LEFT JOIN kps AS k ON k.split = a.split AND k.annotation_id = a.id
    WHERE e.out_split = $1{categories}
    GROUP BY a.split, a.image_id
),
caps AS (
    SELECT c.split, c.image_id, list(c.caption ORDER BY c.source_file, c.record_index) AS captions
    FROM raw_captions AS c
    JOIN export_captions AS e ON e.split = c.split AND e.source_file = c.source_file AND e.id = c.id
    WHERE e.out_split = $1
    GROUP BY c.split, c.image_id
)
SELECT i.split, i.id, i.file_name, i.width, i.height, i.coco_url, a.objects, c.captions
FROM imgs AS i
LEFT JOIN anns AS a ON a.split = i.split AND a.image_id = i.id
LEFT JOIN caps AS c ON c.split = i.split AND c.image_id = i.id
ORDER BY i.id, i.split
"""


def images_query(con) -> tuple[str, list]:
    """The SQL of one output split's rows (its parameters: the split, then those returned),
    filtered on the subset's categories so that the scan skips the row groups of the others
    (``select.subset_categories``)."""
    categories = subset_categories(con)
    if categories is None:
        return _IMAGES_SQL.format(categories=""), []
    return _IMAGES_SQL.format(categories=" AND list_contains($2, a.category_id)"), [categories]


# ---------------------------------------------------------------------------- schema


def _value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


def _sequence(feature, length: int = -1) -> dict:
    return {"feature": feature, "length": length, "_type": "Sequence"}


def features(names: list[str], id_dtype: str, keypoints: bool, captions: bool) -> dict:
    """The ``datasets`` features as ``Features.to_dict()`` gives them (``Sequence`` form)."""
    objects = {
        "id": _value(id_dtype),
        "bbox": _sequence(_value("float64"), 4),
        "category": {"names": list(names), "_type": "ClassLabel"},
        "area": _value("float64"),
        "iscrowd": _value("int32"),
        "segmentation": {"counts": _value("string"), "size": _sequence(_value("int32"), 2)},
    }
    if keypoints:
        objects["keypoints"] = _sequence(_value("float64"))
        objects["num_keypoints"] = _value("int64")
    out = {
        "image": {"_type": "Image"},
        "image_id": _value(id_dtype),
        "file_name": _value("string"),
        "width": _value("int64"),
        "height": _value("int64"),
        "objects": _sequence(objects),
    }
    if captions:
        out["captions"] = _sequence(_value("string"))
    return out


def arrow_schema(names: list[str], id_type: pa.DataType, keypoints: bool, captions: bool) -> pa.Schema:
    """The Arrow schema ``datasets`` derives from ``features(...)``, with them in its metadata."""
    objects = [
        pa.field("id", pa.list_(id_type)),
        pa.field("bbox", pa.list_(pa.list_(pa.float64(), 4))),
        pa.field("category", pa.list_(pa.int64())),
        pa.field("area", pa.list_(pa.float64())),
        pa.field("iscrowd", pa.list_(pa.int32())),
        pa.field("segmentation", pa.list_(pa.struct([("counts", pa.string()),
                                                      ("size", pa.list_(pa.int32(), 2))]))),
    ]
    if keypoints:
        objects += [pa.field("keypoints", pa.list_(pa.list_(pa.float64()))),
                    pa.field("num_keypoints", pa.list_(pa.int64()))]
    fields = [
        pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        pa.field("image_id", id_type),
        pa.field("file_name", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("objects", pa.struct(objects)),
    ]
    if captions:
        fields.append(pa.field("captions", pa.list_(pa.string())))
    feats = features(names, "string" if pa.types.is_string(id_type) else "int64", keypoints, captions)
    return pa.schema(fields, metadata={b"huggingface": json.dumps({"info": {"features": feats}}).encode()})


# ---------------------------------------------------------------------------- rows


def image_path(job: image_files.ImageJob, image_root: str | None) -> str:
    """Where ``datasets`` can open the image from: an absolute path, a zip:// chain or a URL."""
    fs, path = image_files.locate(job, image_root)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return os.path.abspath(path)
    if protocol == "zip":
        return f"zip://{path}::{os.path.abspath(image_root.replace('{split}', job.split))}"
    if image_root is None:
        return job.coco_url
    return fs.unstrip_protocol(path)


def _objects(objs: list | None, index: dict, keypoints: bool, report) -> dict:
    cols: dict[str, list] = {k: [] for k in ("id", "bbox", "category", "area", "iscrowd", "segmentation")}
    if keypoints:
        cols["keypoints"], cols["num_keypoints"] = [], []
    for o in objs or ():
        cls = index.get(o["category_id"])
        if cls is None:
            report.leave_out("unknown category")
            continue
        cols["id"].append(o["id"])
        bbox = o["bbox"]
        cols["bbox"].append(bbox if bbox is not None and len(bbox) == 4 else None)
        cols["category"].append(cls)
        cols["area"].append(o["area"])
        cols["iscrowd"].append(o["iscrowd"])
        cols["segmentation"].append(None if o["counts"] is None else {"counts": o["counts"], "size": o["size"]})
        if keypoints:
            cols["keypoints"].append(o["keypoints"])
            cols["num_keypoints"].append(o["num_keypoints"])
    return cols


class _Shards:
    """Parquet files of one split, opened one after another; named ``-of-N`` when all are written."""

    def __init__(self, data_dir: str, split: str, schema: pa.Schema):
        self.data_dir, self.split, self.schema = data_dir, split, schema
        self.paths: list[str] = []
        self.writer = None
        self.size = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            path = os.path.join(self.data_dir, f"{self.split}-{len(self.paths):05d}.parquet.part")
            self.paths.append(path)
            self.writer = pq.ParquetWriter(path, self.schema)
            self.size = 0
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.size += table.nbytes
        if self.size >= MAX_SHARD_BYTES:
            self.writer.close()
            self.writer = None

    def close(self) -> list[str]:
        if self.writer is not None:
            self.writer.close()
        names = []
        for k, path in enumerate(self.paths):
            name = f"{self.split}-{k:05d}-of-{len(self.paths):05d}.parquet"
            os.replace(path, os.path.join(self.data_dir, name))
            names.append(f"data/{name}")
        return names


def _has(con, table: str) -> bool:
    return con.execute(f"SELECT count(*) > 0 FROM (SELECT 1 FROM {table} LIMIT 1)").fetchall()[0][0]


def write_hf(con, opts: ExportOptions, cmap, report, progress: Progress | None = None) -> dict[str, dict[str, int]]:
    """Write every split's shards; returns {data/<split>: {"images": n, "objects": n, "shards": n}}."""
    names = [t.name for t in cmap.targets]
    index = cmap.index()
    keypoints = con.execute(
        "SELECT count(*) > 0 FROM raw_keypoints AS k SEMI JOIN export_annotations AS e "
        "ON e.split = k.split AND e.source_file = k.source_file AND e.id = k.annotation_id").fetchall()[0][0]
    captions = _has(con, "export_captions")
    id_types = {r[0] for r in con.execute(
        "SELECT DISTINCT i.id_type FROM raw_info AS i SEMI JOIN export_images AS e "
        "ON e.split = i.split AND e.source_file = i.source_file").fetchall()}
    if len(id_types) > 1:
        raise ExportError("the exported files mix integer and string image ids; one hf dataset needs one id "
                          "type: export them separately (--split)")
    id_type = pa.string() if id_types == {"string"} else pa.int64()
    schema = arrow_schema(names, id_type, keypoints, captions)
    embed = opts.images == "copy"
    rows = ROW_GROUP_ROWS_WITH_BYTES if embed else ROW_GROUP_ROWS
    data_dir = os.path.join(opts.out, "data")
    os.makedirs(data_dir, exist_ok=True)
    out_splits = [r[0] for r in con.execute("SELECT DISTINCT out_split FROM export_images ORDER BY 1").fetchall()]
    total = con.execute("SELECT count(*) FROM (SELECT DISTINCT out_split, split, id FROM export_images)").fetchall()[0][0]
    done = 0
    result: dict[str, dict[str, int]] = {}
    sql, categories = images_query(con)
    for out_split in out_splits:
        shards = _Shards(data_dir, out_split, schema)
        counts = {"images": 0, "objects": 0}
        for batch in arrow_batches(con, sql, [out_split, *categories], rows):
            recs = batch.to_pylist()
            jobs = [image_files.ImageJob(r["id"], r["split"], out_split, r["file_name"], r["coco_url"]) for r in recs]
            if embed:
                def step(_phase, n, _total, base=done):
                    if progress:
                        progress("images", base + n, total)
                data = image_files.read_all(jobs, image_root=opts.image_root, threads=opts.threads, progress=step)
                image = [{"bytes": b, "path": j.file_name} for b, j in zip(data, jobs)]
            else:
                image = [{"bytes": None, "path": image_path(j, opts.image_root)} for j in jobs]
            done += len(recs)
            objects = [_objects(r["objects"], index, keypoints, report) for r in recs]
            columns = {
                "image": image,
                "image_id": [r["id"] for r in recs],
                "file_name": [r["file_name"] for r in recs],
                "width": [r["width"] for r in recs],
                "height": [r["height"] for r in recs],
                "objects": objects,
            }
            if captions:
                columns["captions"] = [r["captions"] or [] for r in recs]
            shards.write(pa.Table.from_pydict(columns, schema=schema))
            counts["images"] += len(recs)
            counts["objects"] += sum(len(o["id"]) for o in objects)
        counts["shards"] = len(shards.close())
        result[f"data/{out_split}"] = counts
        log.debug("hf split %s: %s", out_split, counts)
    return result

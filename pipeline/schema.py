"""One ``pa.schema`` per warehouse table: the contract every writer and reader shares.

Every table also carries ``source_file`` (the JSON file's name, e.g.
``instances_val2017.json``), ``kind`` (instances | stuff | person_keypoints | captions |
image_info) and ``record_index`` (position of the record in its source array, so that an
export can restore the source order exactly). ``split`` is not stored in the files: it is
the Hive partition (``<table>/split=<split>/``).

Ids are typed per id space (``IdTypes``): image ids (``images.id`` and every
``image_id``), annotation ids (``annotations.id``, ``captions.id``, ``keypoints.annotation_id``)
and category ids (``categories.id`` and every ``category_id``). Each space is int64, or
string when its ids are JSON strings, kept as given (``"000000000139"`` stays that string),
never renumbered. Licence ids are always int64.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import pyarrow as pa

TABLES = ("images", "annotations", "keypoints", "captions", "categories", "licenses", "info", "rejects",
          "predictions", "prediction_matches", "merge_sources")

# the Hive partition key of each table (``split`` unless named here): the tables of a
# model's results are partitioned by run, ``<table>/run=<run>/``; their manifest parts
# carry the run name in ``Part.split``
PARTITION_KEYS = {"predictions": "run", "prediction_matches": "run"}
RUN_TABLES = tuple(PARTITION_KEYS)


def partition_key(table: str) -> str:
    return PARTITION_KEYS.get(table, "split")

Kind = Literal["instances", "stuff", "person_keypoints", "captions", "image_info"]
KINDS: tuple[Kind, ...] = get_args(Kind)
# a file context's kind: a document's, or a results file's (``evaluate.detections``)
FileKind = Literal[Kind, "results"]

SegmentationFormat = Literal["polygon", "rle", "uncompressed_rle", "none"]
SEGMENTATION_FORMATS: tuple[SegmentationFormat, ...] = get_args(SegmentationFormat)

# A document section's record noun, as messages name one record ("2 duplicate image id(s)").
SECTION_NOUNS = {"images": "image", "annotations": "annotation", "captions": "caption",
                 "categories": "category", "licenses": "license"}

_PROVENANCE = [
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("record_index", pa.int64(), nullable=False),
]


ID_SPACES = ("image", "annotation", "category")
IdType = Literal["int64", "string"]
ID_TYPES: tuple[IdType, ...] = get_args(IdType)


@dataclasses.dataclass(frozen=True)
class IdTypes:
    """The type of each id space of a file or dataset: ``int64`` or ``string``.

    Stored (manifest parts, ``info.id_type``, the manifest's sources) as text: ``int64`` or
    ``string`` when the three spaces agree, else ``image=string,annotation=int64,category=int64``.
    """

    image: IdType = "int64"
    annotation: IdType = "int64"
    category: IdType = "int64"

    @classmethod
    def parse(cls, value: str | IdTypes) -> IdTypes:
        if isinstance(value, IdTypes):
            return value
        if value in ID_TYPES:
            return cls(value, value, value)
        try:
            found = dict(item.split("=", 1) for item in value.split(","))
        except ValueError:
            found = {}
        if set(found) != set(ID_SPACES) or not set(found.values()) <= set(ID_TYPES):
            raise ValueError(f"unknown id type {value!r}")
        return cls(**found)

    def text(self) -> str:
        if self.image == self.annotation == self.category:
            return self.image
        return ",".join(f"{space}={getattr(self, space)}" for space in ID_SPACES)

    def arrow(self, space: str) -> pa.DataType:
        return id_arrow_type(getattr(self, space))


def id_arrow_type(id_type: IdType) -> pa.DataType:
    if id_type == "int64":
        return pa.int64()
    if id_type == "string":
        return pa.string()
    raise ValueError(f"unknown id type {id_type!r}")


# the id space of each id column of each table
ID_COLUMNS = {
    "images": {"id": "image"},
    "annotations": {"id": "annotation", "image_id": "image", "category_id": "category"},
    "keypoints": {"annotation_id": "annotation", "image_id": "image"},
    "captions": {"id": "annotation", "image_id": "image"},
    "categories": {"id": "category"},
    "predictions": {"image_id": "image", "category_id": "category"},
    "merge_sources": {"image_id": "image", "annotation_id": "annotation", "category_id": "category"},
    "prediction_matches": {"gt_id": "annotation", "image_id": "image", "category_id": "category",
                           "best_gt_id": "annotation", "other_gt_id": "annotation",
                           "other_category_id": "category"},
}


def images_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    ids = IdTypes.parse(id_type)
    return pa.schema(
        [
            pa.field("id", ids.arrow("image"), nullable=False),
            pa.field("file_name", pa.string()),
            pa.field("height", pa.int64()),
            pa.field("width", pa.int64()),
            pa.field("license", pa.int64()),
            pa.field("coco_url", pa.string()),
            pa.field("flickr_url", pa.string()),
            pa.field("date_captured", pa.string()),
            # JSON object text of the keys the schema does not know (null when none)
            pa.field("extra", pa.string()),
            # JSON object text of known keys whose values did not fit the typed column
            # (e.g. a float height); restores them exactly on export
            pa.field("raw", pa.string()),
            *_PROVENANCE,
        ]
    )


def annotations_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    ids = IdTypes.parse(id_type)
    return pa.schema(
        [
            pa.field("id", ids.arrow("annotation"), nullable=False),
            pa.field("image_id", ids.arrow("image")),
            pa.field("category_id", ids.arrow("category")),
            pa.field("iscrowd", pa.int32()),
            pa.field("area", pa.float64()),
            pa.field("bbox", pa.list_(pa.float64())),
            # compressed COCO RLE, byte-equal to pycocotools annToRLE(ann)["counts"]
            pa.field("rle_counts", pa.string()),
            # [height, width] of the mask
            pa.field("rle_size", pa.list_(pa.int32())),
            # pixels in the mask (pycocotools mask.area), computed once at ingest
            pa.field("mask_area", pa.int64()),
            # the source polygons (null when the source was RLE or had none)
            pa.field("polygons", pa.list_(pa.list_(pa.float64()))),
            pa.field("segmentation_format", pa.string(), nullable=False),
            pa.field("extra", pa.string()),
            pa.field("raw", pa.string()),
            *_PROVENANCE,
        ]
    )


def keypoints_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    ids = IdTypes.parse(id_type)
    return pa.schema(
        [
            pa.field("annotation_id", ids.arrow("annotation"), nullable=False),
            pa.field("image_id", ids.arrow("image")),
            pa.field("num_keypoints", pa.int64()),
            # x, y, v per joint; doubles so that datasets with sub-pixel keypoints survive
            pa.field("keypoints", pa.list_(pa.float64())),
            *_PROVENANCE,
        ]
    )


def captions_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    ids = IdTypes.parse(id_type)
    return pa.schema(
        [
            pa.field("id", ids.arrow("annotation"), nullable=False),
            pa.field("image_id", ids.arrow("image")),
            pa.field("caption", pa.string()),
            pa.field("extra", pa.string()),
            pa.field("raw", pa.string()),
            *_PROVENANCE,
        ]
    )


def categories_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    ids = IdTypes.parse(id_type)
    return pa.schema(
        [
            pa.field("id", ids.arrow("category"), nullable=False),
            pa.field("name", pa.string()),
            pa.field("supercategory", pa.string()),
            pa.field("keypoints", pa.list_(pa.string())),
            pa.field("skeleton", pa.list_(pa.list_(pa.int64()))),
            pa.field("extra", pa.string()),
            pa.field("raw", pa.string()),
            *_PROVENANCE,
        ]
    )


def licenses_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("name", pa.string()),
            pa.field("url", pa.string()),
            pa.field("extra", pa.string()),
            pa.field("raw", pa.string()),
            *_PROVENANCE,
        ]
    )


def info_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    return pa.schema(
        [
            # JSON text of the "info" object (null when the file has none)
            pa.field("info", pa.string()),
            # JSON text of the whole top-level object with the record arrays emptied:
            # keeps the top-level key order and every unknown top-level key
            pa.field("document", pa.string(), nullable=False),
            pa.field("id_type", pa.string(), nullable=False),
            *_PROVENANCE,
        ]
    )


def rejects_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    return pa.schema(
        [
            # images | annotations | categories | licenses
            pa.field("section", pa.string(), nullable=False),
            # the record's id as JSON text (null when it has none)
            pa.field("record_id", pa.string()),
            pa.field("reason", pa.string(), nullable=False),
            # the record as JSON text, cut at 1 MB
            pa.field("raw", pa.string()),
            *_PROVENANCE,
        ]
    )


def predictions_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    """One row per detection of a COCO results file (``cocolake ingest-results``)."""
    ids = IdTypes.parse(id_type)
    return pa.schema(
        [
            # position in the results file + 1: the id pycocotools' loadRes gives it
            pa.field("id", pa.int64(), nullable=False),
            pa.field("image_id", ids.arrow("image")),
            pa.field("category_id", ids.arrow("category")),
            pa.field("score", pa.float64()),
            # as given, else derived as loadRes does (from the mask or the keypoints)
            pa.field("bbox", pa.list_(pa.float64())),
            # loadRes' area: box w*h when a box is given, else mask pixels, else keypoint extent
            pa.field("area", pa.float64()),
            # compressed COCO RLE, encoded exactly as the ground truth's (null without mask)
            pa.field("rle_counts", pa.string()),
            pa.field("rle_size", pa.list_(pa.int32())),
            pa.field("mask_area", pa.int64()),
            pa.field("keypoints", pa.list_(pa.float64())),
            pa.field("segmentation_format", pa.string(), nullable=False),
            # the ground-truth split whose image the detection is on
            pa.field("split", pa.string(), nullable=False),
            pa.field("extra", pa.string()),
            *_PROVENANCE,
        ]
    )


def prediction_matches_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    """One row per evaluated detection (or unmatched ground truth) and IoU threshold.

    Written by ``cocolake evaluate``; a derived table, so it has no source provenance.
    """
    ids = IdTypes.parse(id_type)
    return pa.schema(
        [
            pa.field("iou_type", pa.string(), nullable=False),
            pa.field("iou_threshold", pa.float64(), nullable=False),
            # tp | fp | ignored (matched a crowd / ignored ground truth) | fn (gt rows)
            pa.field("outcome", pa.string(), nullable=False),
            pa.field("prediction_id", pa.int64()),
            pa.field("gt_id", ids.arrow("annotation")),
            pa.field("image_id", ids.arrow("image")),
            pa.field("category_id", ids.arrow("category")),
            pa.field("score", pa.float64()),
            # position of the detection by score within its image and category (0 = best)
            pa.field("rank", pa.int32()),
            # IoU (OKS for keypoints) with the matched ground truth
            pa.field("iou", pa.float64()),
            # the same-category ground truth that overlaps the detection most, matched or not
            pa.field("best_gt_id", ids.arrow("annotation")),
            pa.field("best_iou", pa.float64()),
            # the ground truth of another category that overlaps it most (bbox and segm)
            pa.field("other_gt_id", ids.arrow("annotation")),
            pa.field("other_category_id", ids.arrow("category")),
            pa.field("other_iou", pa.float64()),
            pa.field("split", pa.string(), nullable=False),
        ]
    )


def merge_sources_schema(id_type: str | IdTypes = "int64") -> pa.Schema:
    """One row per id of a merged dataset and a source record it came from (``cocolake merge``).

    A derived table: the part's ``source_file`` in the manifest is the source dataset's name.
    The merged id is in the column of its space (the others are null), so that each keeps
    its space's type.
    """
    ids = IdTypes.parse(id_type)
    return pa.schema(
        [
            # images | annotations | captions | categories
            pa.field("id_space", pa.string(), nullable=False),
            # the id in the merged dataset: image_id for images, annotation_id for annotations
            # and captions, category_id for categories
            pa.field("image_id", ids.arrow("image")),
            pa.field("annotation_id", ids.arrow("annotation")),
            pa.field("category_id", ids.arrow("category")),
            pa.field("source_dataset", pa.string(), nullable=False),
            # the id in the source dataset, as text ('397133')
            pa.field("original_id", pa.string(), nullable=False),
        ]
    )


SCHEMAS = {
    "images": images_schema,
    "annotations": annotations_schema,
    "keypoints": keypoints_schema,
    "captions": captions_schema,
    "categories": categories_schema,
    "licenses": licenses_schema,
    "info": info_schema,
    "rejects": rejects_schema,
    "predictions": predictions_schema,
    "prediction_matches": prediction_matches_schema,
    "merge_sources": merge_sources_schema,
}


def schema_for(table: str, id_type: str | IdTypes = "int64") -> pa.Schema:
    return SCHEMAS[table](id_type)


def empty_table(table: str, id_type: str | IdTypes = "int64") -> pa.Table:
    return schema_for(table, id_type).empty_table()

"""One schema per warehouse table: the contract every writer and reader shares.

The columns are plain data (``COLUMNS``, types as text); ``schema_for`` makes the
``pa.schema`` (pyarrow is imported then), ``columns_for`` gives names and types to readers
that need no Arrow (the SQL views).

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
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import pyarrow as pa

TABLES = ("images", "annotations", "keypoints", "captions", "categories", "licenses", "info", "rejects",
          "predictions", "prediction_matches", "merge_sources", "category_counts")

# tables computed from others at commit, one part per split: the tables each is computed
# from. A commit that changes a split's parts of those drops the split's derived part
# (``Warehouse.next_manifest``) unless it brings a new one, so a stored part is never stale.
DERIVED_FROM = {"category_counts": ("annotations",)}

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
    ("source_file", "string", False),
    ("kind", "string", False),
    ("record_index", "int64", False),
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
    if id_type not in ID_TYPES:
        raise ValueError(f"unknown id type {id_type!r}")
    return arrow_type(id_type)


# the id space of each id column of each table
ID_COLUMNS = {
    "images": {"id": "image"},
    "annotations": {"id": "annotation", "image_id": "image", "category_id": "category"},
    "keypoints": {"annotation_id": "annotation", "image_id": "image"},
    "captions": {"id": "annotation", "image_id": "image"},
    "categories": {"id": "category"},
    "category_counts": {"category_id": "category"},
    "predictions": {"image_id": "image", "category_id": "category"},
    "merge_sources": {"image_id": "image", "annotation_id": "annotation", "category_id": "category"},
    "prediction_matches": {"gt_id": "annotation", "image_id": "image", "category_id": "category",
                           "best_gt_id": "annotation", "other_gt_id": "annotation",
                           "other_category_id": "category"},
}


def _images(id_type: str | IdTypes = "int64") -> list[tuple]:
    ids = IdTypes.parse(id_type)
    return [
        ("id", ids.image, False),
        ("file_name", "string"),
        ("height", "int64"),
        ("width", "int64"),
        ("license", "int64"),
        ("coco_url", "string"),
        ("flickr_url", "string"),
        ("date_captured", "string"),
        # JSON object text of the keys the schema does not know (null when none)
        ("extra", "string"),
        # JSON object text of known keys whose values did not fit the typed column
        # (e.g. a float height); restores them exactly on export
        ("raw", "string"),
        *_PROVENANCE,
    ]


def _annotations(id_type: str | IdTypes = "int64") -> list[tuple]:
    ids = IdTypes.parse(id_type)
    return [
        ("id", ids.annotation, False),
        ("image_id", ids.image),
        ("category_id", ids.category),
        ("iscrowd", "int32"),
        ("area", "double"),
        ("bbox", "list<double>"),
        # compressed COCO RLE, byte-equal to pycocotools annToRLE(ann)["counts"]
        ("rle_counts", "string"),
        # [height, width] of the mask
        ("rle_size", "list<int32>"),
        # pixels in the mask (pycocotools mask.area), computed once at ingest
        ("mask_area", "int64"),
        # the source polygons (null when the source was RLE or had none)
        ("polygons", "list<list<double>>"),
        ("segmentation_format", "string", False),
        ("extra", "string"),
        ("raw", "string"),
        *_PROVENANCE,
    ]


def _keypoints(id_type: str | IdTypes = "int64") -> list[tuple]:
    ids = IdTypes.parse(id_type)
    return [
        ("annotation_id", ids.annotation, False),
        ("image_id", ids.image),
        ("num_keypoints", "int64"),
        # x, y, v per joint; doubles so that datasets with sub-pixel keypoints survive
        ("keypoints", "list<double>"),
        *_PROVENANCE,
    ]


def _captions(id_type: str | IdTypes = "int64") -> list[tuple]:
    ids = IdTypes.parse(id_type)
    return [
        ("id", ids.annotation, False),
        ("image_id", ids.image),
        ("caption", "string"),
        ("extra", "string"),
        ("raw", "string"),
        *_PROVENANCE,
    ]


def _categories(id_type: str | IdTypes = "int64") -> list[tuple]:
    ids = IdTypes.parse(id_type)
    return [
        ("id", ids.category, False),
        ("name", "string"),
        ("supercategory", "string"),
        ("keypoints", "list<string>"),
        ("skeleton", "list<list<int64>>"),
        ("extra", "string"),
        ("raw", "string"),
        *_PROVENANCE,
    ]


def _licenses(id_type: str | IdTypes = "int64") -> list[tuple]:
    return [
        ("id", "int64"),
        ("name", "string"),
        ("url", "string"),
        ("extra", "string"),
        ("raw", "string"),
        *_PROVENANCE,
    ]


def _info(id_type: str | IdTypes = "int64") -> list[tuple]:
    return [
        # JSON text of the "info" object (null when the file has none)
        ("info", "string"),
        # JSON text of the whole top-level object with the record arrays emptied:
        # keeps the top-level key order and every unknown top-level key
        ("document", "string", False),
        ("id_type", "string", False),
        *_PROVENANCE,
    ]


def _rejects(id_type: str | IdTypes = "int64") -> list[tuple]:
    return [
        # images | annotations | categories | licenses
        ("section", "string", False),
        # the record's id as JSON text (null when it has none)
        ("record_id", "string"),
        ("reason", "string", False),
        # the record as JSON text, cut at 1 MB
        ("raw", "string"),
        *_PROVENANCE,
    ]


def _predictions(id_type: str | IdTypes = "int64") -> list[tuple]:
    """One row per detection of a COCO results file (``cocolake ingest-results``)."""
    ids = IdTypes.parse(id_type)
    return [
        # position in the results file + 1: the id pycocotools' loadRes gives it
        ("id", "int64", False),
        ("image_id", ids.image),
        ("category_id", ids.category),
        ("score", "double"),
        # as given, else derived as loadRes does (from the mask or the keypoints)
        ("bbox", "list<double>"),
        # loadRes' area: box w*h when a box is given, else mask pixels, else keypoint extent
        ("area", "double"),
        # compressed COCO RLE, encoded exactly as the ground truth's (null without mask)
        ("rle_counts", "string"),
        ("rle_size", "list<int32>"),
        ("mask_area", "int64"),
        ("keypoints", "list<double>"),
        ("segmentation_format", "string", False),
        # the ground-truth split whose image the detection is on
        ("split", "string", False),
        ("extra", "string"),
        *_PROVENANCE,
    ]


def _prediction_matches(id_type: str | IdTypes = "int64") -> list[tuple]:
    """One row per evaluated detection (or unmatched ground truth) and IoU threshold.

    Written by ``cocolake evaluate``; a derived table, so it has no source provenance.
    """
    ids = IdTypes.parse(id_type)
    return [
        ("iou_type", "string", False),
        ("iou_threshold", "double", False),
        # tp | fp | ignored (matched a crowd / ignored ground truth) | fn (gt rows)
        ("outcome", "string", False),
        ("prediction_id", "int64"),
        ("gt_id", ids.annotation),
        ("image_id", ids.image),
        ("category_id", ids.category),
        ("score", "double"),
        # position of the detection by score within its image and category (0 = best)
        ("rank", "int32"),
        # IoU (OKS for keypoints) with the matched ground truth
        ("iou", "double"),
        # the same-category ground truth that overlaps the detection most, matched or not
        ("best_gt_id", ids.annotation),
        ("best_iou", "double"),
        # the ground truth of another category that overlaps it most (bbox and segm)
        ("other_gt_id", ids.annotation),
        ("other_category_id", ids.category),
        ("other_iou", "double"),
        ("split", "string", False),
    ]


def _merge_sources(id_type: str | IdTypes = "int64") -> list[tuple]:
    """One row per id of a merged dataset and a source record it came from (``cocolake merge``).

    A derived table: the part's ``source_file`` in the manifest is the source dataset's name.
    The merged id is in the column of its space (the others are null), so that each keeps
    its space's type.
    """
    ids = IdTypes.parse(id_type)
    return [
        # images | annotations | captions | categories
        ("id_space", "string", False),
        # the id in the merged dataset: image_id for images, annotation_id for annotations
        # and captions, category_id for categories
        ("image_id", ids.image),
        ("annotation_id", ids.annotation),
        ("category_id", ids.category),
        ("source_dataset", "string", False),
        # the id in the source dataset, as text ('397133')
        ("original_id", "string", False),
    ]


def _category_counts(id_type: str | IdTypes = "int64") -> list[tuple]:
    """One row per split and category with annotations: the aggregates of ``category_stats``
    as the ``category_counts`` view computes them from ``annotations`` (``query.summary``).

    A derived table (``DERIVED_FROM``), written by every commit that changes a split's
    annotations: its part's ``source_file`` in the manifest is empty.
    """
    ids = IdTypes.parse(id_type)
    return [
        ("category_id", ids.category),
        ("annotations", "int64", False),
        ("images", "int64", False),
        ("crowd", "int64", False),
        ("mean_area", "double"),
        ("median_area", "double"),
        ("small", "int64", False),
        ("medium", "int64", False),
        ("large", "int64", False),
    ]


# each table's columns: (name, type, nullable); types as text (int64, int32, double, string,
# list<...>), ids in the type of their space
COLUMNS = {
    "images": _images,
    "annotations": _annotations,
    "keypoints": _keypoints,
    "captions": _captions,
    "categories": _categories,
    "licenses": _licenses,
    "info": _info,
    "rejects": _rejects,
    "predictions": _predictions,
    "prediction_matches": _prediction_matches,
    "merge_sources": _merge_sources,
    "category_counts": _category_counts,
}


def columns_for(table: str, id_type: str | IdTypes = "int64") -> list[tuple[str, str]]:
    """(name, type text) of each column of ``table``: what a reader needs without pyarrow."""
    return [(c[0], c[1]) for c in COLUMNS[table](id_type)]


def schema_for(table: str, id_type: str | IdTypes = "int64") -> pa.Schema:
    import pyarrow as pa  # at first use: a SQL query over the warehouse needs only the names

    return pa.schema([pa.field(c[0], arrow_type(c[1]), nullable=c[2] if len(c) > 2 else True)
                      for c in COLUMNS[table](id_type)])


def arrow_type(text: str) -> pa.DataType:
    """The Arrow type of a column type's text (``list<list<double>>``)."""
    import pyarrow as pa

    if text.startswith("list<") and text.endswith(">"):
        return pa.list_(arrow_type(text[5:-1]))
    return {"int64": pa.int64(), "int32": pa.int32(), "double": pa.float64(), "string": pa.string()}[text]


def empty_table(table: str, id_type: str | IdTypes = "int64") -> pa.Table:
    return schema_for(table, id_type).empty_table()

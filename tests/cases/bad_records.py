"""What real COCO-format files get wrong, and the unusual files that must still be accepted.

Each ``BadRecord`` adds one bad record to a small valid document (``base()``): with
``--on-bad-record error`` the run stops naming the file, the record and the problem; with
``skip`` every other record lands and the bad one goes to ``rejects``. Each ``BadFile`` is
a whole-file problem that fails the file in both modes. Each ``Accepted`` is valid but
unusual and must round-trip exactly through ingest and ``export --format coco``.
``upstream`` links a public report of the problem in the wild.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import zipfile

FILE = "instances_val2017.json"
NAN, INF = float("nan"), float("inf")


def base(anns=(), images=(), cats=(), **top) -> dict:
    """Two 20x30 images, two categories, one polygon annotation per image; ``anns`` etc. appended."""
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 20, "width": 30},
            {"id": 2, "file_name": "b.jpg", "height": 20, "width": 30},
            *images,
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0, "bbox": [1, 1, 4, 4],
             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
            {"id": 11, "image_id": 2, "category_id": 2, "iscrowd": 0, "area": 16.0, "bbox": [1, 1, 4, 4],
             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
            *anns,
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, *cats],
    }
    doc.update(top)
    return doc


def ann(**fields) -> dict:
    """A valid annotation (id 99 on image 1) with ``fields`` replaced; ``...`` removes a key."""
    rec = {"id": 99, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [1, 1, 2, 2],
           "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]]}
    rec.update(fields)
    return {k: v for k, v in rec.items() if v is not ...}


def keypoint_doc(anns=()) -> dict:
    """A person_keypoints-style document: category 1 names two joints."""
    doc = base()
    doc["categories"][0].update(keypoints=["nose", "eye"], skeleton=[[1, 2]])
    doc["annotations"][0].update(keypoints=[2, 2, 2, 3, 3, 1], num_keypoints=2)
    doc["annotations"] += list(anns)
    return doc


def dumps(doc) -> bytes:
    """As Python's json writes it: NaN and Infinity as bare words, as many tools emit them."""
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


@dataclasses.dataclass(frozen=True)
class BadRecord:
    name: str
    doc: dict
    record: str  # how the message names it: "annotation id=99", "image #2"
    problem: str  # regex of the problem
    # (section, record_id as JSON text or None, index in its array) of every record skip mode rejects
    rejects: tuple = (("annotations", "99", 2),)
    upstream: str | None = None
    file: str = FILE


@dataclasses.dataclass(frozen=True)
class BadFile:
    name: str
    data: bytes
    problem: str  # regex of the whole message after "<file>: "
    upstream: str | None = None
    file: str = FILE


@dataclasses.dataclass(frozen=True)
class Accepted:
    name: str
    doc: dict
    data: bytes | None = None  # the file's bytes when they are not plain UTF-8 JSON of ``doc``
    upstream: str | None = None
    file: str = FILE
    split: str | None = None


BAD_RECORDS = [
    # ------------------------------------------------------------------ polygons
    BadRecord("polygon_with_4_numbers", base([ann(segmentation=[[1, 1, 5, 1]])]), "annotation id=99",
              r"polygon has 4 coordinates; expected an even count >= 6 \(pycocotools would read 4 numbers as a box",
              upstream="https://github.com/open-mmlab/mmdetection/issues/7776"),
    BadRecord("polygon_with_odd_count", base([ann(segmentation=[[1, 1, 5, 1, 5, 5, 1]])]), "annotation id=99",
              r"polygon has 7 coordinates; expected an even count >= 6",
              upstream="https://github.com/MarkPotanin/copy_paste_aug_detectron2/issues/2"),
    BadRecord("polygon_with_a_stray_one_point_part",
              base([ann(segmentation=[[1, 1, 5, 1, 5, 5, 1, 5], [3, 3]])]), "annotation id=99",
              r"polygon has 2 coordinates; expected an even count >= 6",
              upstream="https://github.com/cvat-ai/cvat/issues/955"),
    BadRecord("polygon_with_an_empty_part", base([ann(segmentation=[[1, 1, 5, 1, 5, 5], []])]), "annotation id=99",
              r"polygon has 0 coordinates; expected an even count >= 6",
              upstream="https://github.com/facebookresearch/Detectron/issues/397"),
    BadRecord("polygon_flat_instead_of_nested", base([ann(segmentation=[1, 1, 5, 1, 5, 5])]), "annotation id=99",
              r"segmentation is a flat list of numbers; expected a list of polygons \[\[x1, y1, x2, y2, \.\.\.\]\]",
              upstream="https://github.com/cvat-ai/cvat/issues/6392"),
    BadRecord("polygon_nested_too_deep", base([ann(segmentation=[[[1, 1], [5, 1], [5, 5]]])]), "annotation id=99",
              r"polygon has a coordinate that is not a number",
              upstream="https://github.com/cocodataset/cocoapi/issues/102"),
    BadRecord("polygon_with_string_coordinates", base([ann(segmentation=[["1", "1", "5", "1", "5", "5"]])]),
              "annotation id=99", r"polygon has a coordinate that is not a number"),
    BadRecord("polygon_with_nan", base([ann(segmentation=[[1, 1, 5, NAN, 5, 5]])]), "annotation id=99",
              r"coordinate nan is not finite"),
    BadRecord("polygon_with_infinity", base([ann(segmentation=[[1, 1, 5, INF, 5, 5]])]), "annotation id=99",
              r"coordinate inf is not finite"),
    BadRecord("polygon_with_absurd_coordinate", base([ann(segmentation=[[1, 1, 5, 1e300, 5, 5]])]),
              "annotation id=99", r"coordinate 1e\+300 is outside \[-10120, 10120\]"),
    BadRecord("polygon_with_integer_beyond_int64", base([ann(segmentation=[[1, 1, 5, 10**19, 5, 5]])]),
              "annotation id=99", r"coordinate 1e\+19 is outside \[-10120, 10120\]"),
    BadRecord("polygon_on_an_image_too_large_to_encode",
              base([ann(image_id=3)], images=[{"id": 3, "file_name": "c.jpg", "height": 100000, "width": 100000}]),
              "annotation id=99", r"image size \[100000, 100000\] has 10000000000 pixels, more than 536870911"),
    BadRecord("polygon_on_an_image_without_height_width",
              base([ann(image_id=3)], images=[{"id": 3, "file_name": "c.jpg"}]), "annotation id=99",
              r"has polygons but its image has no height/width to draw them on",
              upstream="https://github.com/open-mmlab/mmdetection/issues/4139"),
    BadRecord("segmentation_is_a_string", base([ann(segmentation="polygon")]), "annotation id=99",
              r'segmentation "polygon" is neither polygons nor an RLE object'),
    BadRecord("segmentation_mixes_polygons_and_numbers", base([ann(segmentation=[[1, 1, 5, 1, 5, 5], 3])]),
              "annotation id=99", r"segmentation list mixes polygons and other values"),
    BadRecord("segmentation_is_an_empty_object", base([ann(segmentation={})]), "annotation id=99",
              r"RLE size null is not \[height, width\]",
              upstream="https://github.com/dbolya/yolact/issues/414"),
    # ------------------------------------------------------------------ bbox, area, iscrowd
    BadRecord("bbox_with_negative_width", base([ann(bbox=[1, 1, -3, 4])]), "annotation id=99",
              r"bbox \[1,1,-3,4\] has a negative width or height",
              upstream="https://github.com/cocodataset/cocoapi/issues/646"),
    BadRecord("bbox_with_nan_size", base([ann(bbox=[1, 1, NAN, 4])]), "annotation id=99",
              r"bbox \[1,1,NaN,4\] is not 4 finite numbers \[x, y, width, height\]"),
    BadRecord("bbox_with_3_numbers", base([ann(bbox=[1, 1, 4])]), "annotation id=99",
              r"bbox \[1,1,4\] is not 4 finite numbers"),
    BadRecord("area_nan", base([ann(area=NAN)]), "annotation id=99", r"area nan is not a finite number"),
    BadRecord("iscrowd_2", base([ann(iscrowd=2)]), "annotation id=99", r"iscrowd 2 is not 0 or 1"),
    # ------------------------------------------------------------------ RLE
    BadRecord("rle_counts_do_not_sum_to_h_w",
              base([ann(iscrowd=1, segmentation={"counts": [5, 5, 5], "size": [20, 30]})]), "annotation id=99",
              r"RLE counts sum to 15, expected h\*w=600",
              upstream="https://github.com/cocodataset/cocoapi/issues/135"),
    BadRecord("compressed_rle_counts_do_not_sum_to_h_w",
              base([ann(iscrowd=1, segmentation={"counts": "52", "size": [20, 30]})]), "annotation id=99",
              r"RLE counts sum to 7, expected h\*w=600"),
    BadRecord("rle_size_is_width_height",
              base([ann(iscrowd=1, segmentation={"counts": [600], "size": [30, 20]})]), "annotation id=99",
              r"RLE size \[30, 20\] is \[width, height\]; the image is 20x30 \(height x width\)",
              upstream="https://github.com/facebookresearch/maskrcnn-benchmark/pull/679"),
    BadRecord("rle_size_differs_from_the_image",
              base([ann(iscrowd=1, segmentation={"counts": [500], "size": [25, 20]})]), "annotation id=99",
              r"RLE size \[25, 20\] differs from the image's \[height, width\] \[20, 30\]",
              upstream="https://github.com/facebookresearch/maskrcnn-benchmark/pull/859"),
    BadRecord("rle_counts_as_python_bytes_repr",
              base([ann(iscrowd=1, segmentation={"counts": "b'PPYo0'", "size": [20, 30]})]), "annotation id=99",
              r"RLE counts is a Python bytes repr \(b'\.\.\.'\); decode the bytes to str before json\.dump",
              upstream="https://github.com/cocodataset/cocoapi/issues/492"),
    BadRecord("rle_with_a_negative_run",
              base([ann(iscrowd=1, segmentation={"counts": [700, -100], "size": [20, 30]})]), "annotation id=99",
              r"RLE counts has a negative run -100 at position 1"),
    BadRecord("rle_counts_of_floats",
              base([ann(iscrowd=1, segmentation={"counts": [300.0, 300.0], "size": [20, 30]})]), "annotation id=99",
              r"counts is not a string or list of ints: got list of float",
              upstream="https://github.com/luxonis/luxonis-ml/pull/144"),
    BadRecord("rle_counts_null", base([ann(iscrowd=1, segmentation={"counts": None, "size": [20, 30]})]),
              "annotation id=99", r"RLE counts null is neither a string nor a list of integers"),
    BadRecord("rle_too_large_to_encode",
              base([ann(image_id=3, iscrowd=1, segmentation={"counts": [10**10], "size": [100000, 100000]})],
                   images=[{"id": 3, "file_name": "c.jpg", "height": 100000, "width": 100000}]),
              "annotation id=99", r"RLE size \[100000, 100000\] has 10000000000 pixels, more than 536870911"),
    BadRecord("compressed_rle_with_characters_outside_the_alphabet",
              base([ann(iscrowd=1, segmentation={"counts": "~~~~", "size": [20, 30]})]), "annotation id=99",
              r"compressed counts has character '~' at position 0; expected characters '0' to 'o'"),
    # ------------------------------------------------------------------ references and ids
    BadRecord("annotation_on_a_missing_image", base([ann(image_id=7)]), "annotation id=99",
              r"image_id 7 is not in this file's images",
              upstream="https://github.com/jsbroks/coco-annotator/issues/312"),
    BadRecord("annotation_of_a_missing_category", base([ann(category_id=7)]), "annotation id=99",
              r"category_id 7 is not in this file's categories",
              upstream="https://github.com/facebookresearch/detectron2/issues/1767"),
    BadRecord("annotation_on_an_image_that_was_rejected",
              base([ann(image_id=3)], images=[{"id": 3, "file_name": "c.jpg", "height": -1, "width": 5}]),
              "image id=3", r"height/width -1x5 must be positive",
              rejects=(("images", "3", 2), ("annotations", "99", 2))),
    BadRecord("string_annotation_id_among_integers", base([ann(id="99")]), "annotation id='99'",
              r"id '99' is a string but this file's annotation ids are integers "
              r"\(mixed annotation id types; the first annotation's id is 10\)",
              rejects=(("annotations", '"99"', 2),),
              upstream="https://github.com/zylo117/Yet-Another-EfficientDet-Pytorch/issues/60"),
    BadRecord("string_image_id_among_integers", base([ann(image_id="1")]), "annotation id=99",
              r"image_id '1' is a string but this file's image ids are integers "
              r"\(mixed image id types; the first image's id is 1\)",
              upstream="https://github.com/cvat-ai/cvat/issues/298"),
    BadRecord("string_image_among_integer_images",
              base(images=[{"id": "3", "file_name": "c.jpg", "height": 5, "width": 5}]), "image id='3'",
              r"id '3' is a string but this file's image ids are integers \(mixed image id types; the first image's id is 1\)",
              rejects=(("images", '"3"', 2),)),
    BadRecord("string_category_id_among_integers", base([ann(category_id="1")]), "annotation id=99",
              r"category_id '1' is a string but this file's category ids are integers "
              r"\(mixed category id types; the first category's id is 1\)"),
    BadRecord("string_category_among_integer_categories", base(cats=[{"id": "c3", "name": "c"}]), "category id='c3'",
              r"id 'c3' is a string but this file's category ids are integers "
              r"\(mixed category id types; the first category's id is 1\)",
              rejects=(("categories", '"c3"', 2),)),
    BadRecord("id_beyond_int64", base([ann(id=2**63)]), "annotation id=9223372036854775808",
              r"id 9223372036854775808 does not fit in a 64-bit integer",
              rejects=(("annotations", "9223372036854775808", 2),)),
    BadRecord("id_true", base([ann(id=True)]), "annotation #2", r"id True is not an integer",
              rejects=(("annotations", "true", 2),)),
    BadRecord("id_a_fraction", base([ann(id=10.5)]), "annotation #2", r"id 10\.5 is not an integer",
              rejects=(("annotations", "10.5", 2),)),
    BadRecord("annotation_without_id", base([ann(id=...)]), "annotation #2", r"id is missing",
              rejects=(("annotations", None, 2),),
              upstream="https://github.com/matterport/Mask_RCNN/issues/1439"),
    BadRecord("image_without_id", base(images=[{"file_name": "c.jpg", "height": 5, "width": 5}]), "image #2",
              r"id is missing", rejects=(("images", None, 2),)),
    BadRecord("category_without_id", base(cats=[{"name": "c"}]), "category #2", r"id is missing",
              rejects=(("categories", None, 2),)),
    BadRecord("annotation_is_not_an_object", base([42]), "annotation #2", r"is a JSON int, expected an object",
              rejects=(("annotations", None, 2),)),
    BadRecord("license_is_not_an_object", base(licenses=[{"id": 1, "name": "l"}, 7]), "license #1",
              r"is a JSON int, expected an object", rejects=(("licenses", None, 1),)),
    # ------------------------------------------------------------------ images
    BadRecord("image_of_height_0", base(images=[{"id": 3, "file_name": "c.jpg", "height": 0, "width": 5}]),
              "image id=3", r"height/width 0x5 must be positive", rejects=(("images", "3", 2),),
              upstream="https://github.com/bytedance/coconut_cvpr2024/issues/14"),
    BadRecord("file_name_with_nul", base(images=[{"id": 3, "file_name": "c\x00.jpg", "height": 5, "width": 5}]),
              "image id=3", r"file_name contains a NUL character", rejects=(("images", "3", 2),)),
    # ------------------------------------------------------------------ keypoints
    BadRecord("keypoints_not_3_per_joint", keypoint_doc([ann(keypoints=[1, 1, 2, 2, 2], num_keypoints=2)]),
              "annotation id=99", r"keypoints has 5 numbers; expected 3 per joint \(x, y, visibility\)",
              file="person_keypoints_val2017.json",
              upstream="https://github.com/facebookresearch/detectron2/issues/445"),
    BadRecord("keypoints_not_matching_the_category", keypoint_doc([ann(keypoints=[1, 1, 2], num_keypoints=1)]),
              "annotation id=99", r"keypoints has 1 joints; category 1 names 2",
              file="person_keypoints_val2017.json",
              upstream="https://github.com/open-mmlab/mmpose/issues/1155"),
    BadRecord("keypoints_with_nan",
              keypoint_doc([ann(keypoints=[1, 1, 2, 2, NAN, 2], num_keypoints=2)]), "annotation id=99",
              r"keypoints \[1,1,2,2,NaN,2\] is not a list of finite numbers", file="person_keypoints_val2017.json"),
    BadRecord("num_keypoints_a_string",
              keypoint_doc([ann(keypoints=[1, 1, 2, 2, 2, 2], num_keypoints="2")]), "annotation id=99",
              r"num_keypoints '2' is not an integer", file="person_keypoints_val2017.json"),
]


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


_GOOD = dumps(base())

BAD_FILES = [
    BadFile("duplicate_image_ids", dumps(base(images=[{"id": 1, "file_name": "c.jpg", "height": 5, "width": 5}])),
            r"1 duplicate image id\(s\) \(1\); ids must be unique within a file",
            upstream="https://github.com/cocodataset/cocoapi/issues/600"),
    BadFile("duplicate_annotation_ids", dumps(base([ann(id=10)])),
            r"1 duplicate annotation id\(s\) \(10\); ids must be unique within a file",
            upstream="https://github.com/open-mmlab/mmdetection/issues/4897"),
    BadFile("duplicate_category_ids", dumps(base(cats=[{"id": 1, "name": "c"}])),
            r"1 duplicate category id\(s\) \(1\); ids must be unique within a file"),
    BadFile("not_utf8", dumps(base(images=[{"id": 3, "file_name": "café.jpg", "height": 5, "width": 5}]))
            .replace("café".encode(), "café".encode("latin-1")),
            r"images: bytes at \d+ are not UTF-8 text",
            upstream="https://github.com/chenyilun95/tf-cpn/issues/61"),
    BadFile("truncated", _GOOD[:-40], r"the file ends at byte \d+ inside an unfinished value; it is truncated or not JSON",
            upstream="https://github.com/HRNet/HRNet-Object-Detection/issues/11"),
    BadFile("empty", b"", r"the file is empty; expected a COCO JSON object",
            upstream="https://github.com/amdegroot/ssd.pytorch/issues/199"),
    BadFile("only_whitespace", b" \n\t", r"the file is empty; expected a COCO JSON object"),
    BadFile("list_at_the_top_level", dumps([base()]), r"the top level is a list; expected a COCO JSON object"),
    BadFile("html_error_page", b"<html><body>404 Not Found</body></html>",
            r"the top level is not a JSON object; expected a COCO JSON object"),
    BadFile("missing_images", dumps({"annotations": [], "categories": []}),
            r"has 'annotations' but no 'images'; annotations need their images",
            upstream="https://github.com/pylabel-project/samples/issues/8"),
    BadFile("missing_categories", dumps({k: v for k, v in base().items() if k != "categories"}),
            r"an instances file needs 'categories'; the file has none",
            upstream="https://github.com/cvat-ai/cvat/issues/9406"),
    BadFile("images_is_an_object", dumps({**base(), "images": {"id": 1}}),
            r"top-level 'images' is a dict, expected a list"),
    BadFile("two_documents_concatenated", _GOOD + _GOOD,
            r"unexpected data after the top-level object at byte \d+",
            upstream="https://github.com/JingyuanHu/COCO2VOC/issues/2"),
    BadFile("number_with_5000_digits", _GOOD.replace(b'"area": 16.0', b'"area": ' + b"9" * 5000, 1),
            r"annotations: a number near byte \d+ has more digits than Python reads \(4300\)"),
    BadFile("nested_5000_deep", _GOOD.replace(b'"bbox": [1, 1, 4, 4]', b'"bbox": ' + b"[" * 5000 + b"]" * 5000, 1),
            r"(?=.*nest).*byte \d+"),  # refused by the splitter, before any parser recurses
    BadFile("corrupt_gzip", gzip.compress(_GOOD)[:-30], r"corrupt or truncated compressed data"),
]

_LVIS = {
    "info": {"description": "LVIS-style", "year": 2019},
    "images": [
        {"id": 1, "file_name": "a.jpg", "height": 20, "width": 30, "coco_url": "http://example.org/a.jpg",
         "neg_category_ids": [2], "not_exhaustive_category_ids": [], "date_captured": "2013-11-14 17:02:52"},
    ],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "area": 16.0, "bbox": [1.0, 1.0, 4.0, 4.0],
         "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]},
    ],
    "categories": [
        {"id": 1, "name": "aerosol_can", "synset": "aerosol.n.02", "synonyms": ["aerosol_can", "spray_can"],
         "def": "a dispenser that holds a substance under pressure", "frequency": "c", "image_count": 64,
         "instance_count": 109},
        {"id": 2, "name": "air_conditioner", "synset": "air_conditioner.n.01", "synonyms": ["air_conditioner"],
         "def": "a machine that keeps air cool and dry", "frequency": "f", "image_count": 364,
         "instance_count": 1466},
    ],
    "licenses": [{"id": 1, "name": "CC", "url": "http://example.org/l"}],
}

_STRING_IDS = {
    "images": [{"id": "img-a", "file_name": "a.jpg", "height": 20, "width": 30},
               {"id": "0001", "file_name": "b.jpg", "height": 20, "width": 30}],
    "annotations": [
        {"id": "ann-1", "image_id": "img-a", "category_id": "cat", "iscrowd": 0, "area": 16.0,
         "bbox": [1.0, 1.0, 4.0, 4.0], "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]},
        {"id": "ann-2", "image_id": "0001", "category_id": "cat", "iscrowd": 0, "area": 16.0,
         "bbox": [1.0, 1.0, 4.0, 4.0], "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]},
    ],
    "categories": [{"id": "cat", "name": "cat"}],
}

# converted datasets: zero-padded string image ids with integer annotation and category ids
_STRING_IMAGE_IDS = {
    "images": [{"id": "000000000139", "file_name": "000000000139.jpg", "height": 20, "width": 30},
               {"id": "000000000285", "file_name": "000000000285.jpg", "height": 20, "width": 30}],
    "annotations": [
        {"id": 1, "image_id": "000000000139", "category_id": 1, "iscrowd": 0, "area": 16.0,
         "bbox": [1.0, 1.0, 4.0, 4.0], "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]},
        {"id": 2, "image_id": "000000000285", "category_id": 2, "iscrowd": 0, "area": 16.0,
         "bbox": [1.0, 1.0, 4.0, 4.0], "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}
# string image and annotation ids, integer category ids
_STRING_IMAGE_AND_ANNOTATION_IDS = {
    **_STRING_IMAGE_IDS,
    "annotations": [{**a, "id": f"ann-{a['id']}"} for a in _STRING_IMAGE_IDS["annotations"]],
}

_UNICODE = {
    "images": [{"id": 1, "file_name": "données/café ☕ 猫.jpg", "height": 20, "width": 30},
               {"id": 2, "file_name": "Ελληνικά/נ.png", "height": 20, "width": 30}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0,
                     "bbox": [1.0, 1.0, 4.0, 4.0], "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]}],
    "categories": [{"id": 1, "name": "chat 🐈", "supercategory": "животное"}],
}

_NO_ANNOTATIONS = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30},
               {"id": 2, "file_name": "empty.jpg", "height": 20, "width": 30}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0,
                     "bbox": [1.0, 1.0, 4.0, 4.0], "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]}],
    "categories": [{"id": 1, "name": "a"}],
}

_KEYPOINTS_AND_CAPTIONS = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 16.0, "bbox": [1.0, 1.0, 4.0, 4.0],
         "segmentation": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]], "num_keypoints": 1,
         "keypoints": [2.0, 2.0, 2.0, 0.0, 0.0, 0.0]},
        {"id": 11, "image_id": 1, "caption": "A person next to nothing in particular."},
    ],
    "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": ["nose", "eye"],
                    "skeleton": [[1, 2]]}],
}

# a 20x30 crowd mask as pycocotools writes it: compressed counts, iscrowd 1
_CROWD_COUNTS = "c2<80000000000IJ060J067000000000000000000000000Q3"

_CROWD = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 248.0, "bbox": [4.0, 3.0, 21.0, 12.0],
         "segmentation": {"size": [20, 30], "counts": _CROWD_COUNTS}},
    ],
    "categories": [{"id": 1, "name": "person"}],
}

_EMPTY_SEGMENTATION = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 12.0,
                     "bbox": [1.0, 1.0, 4.0, 3.0], "segmentation": []}],
    "categories": [{"id": 1, "name": "box-only"}],
}

_PLAIN = json.loads(_GOOD)

# integers a float64 column cannot hold exactly: kept as written (in ``raw``), not rounded
_HUGE_NUMBERS = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 2**55 + 1,
                     "bbox": [1, 1, 2**60 + 1, 4]}],
    "categories": [{"id": 1, "name": "a"}],
}

# NaN and Infinity where no typed column needs a number: kept as written, exported as written
_NON_FINITE_EXTRAS = {
    "info": {"year": float("nan")},
    "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30, "score": float("inf")}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 8.0,
                     "bbox": [1, 1, 2, 4], "quality": [float("nan"), -float("inf")]}],
    "categories": [{"id": 1, "name": "a", "weight": float("nan")}],
}

ACCEPTED = [
    Accepted("lvis_style_extra_fields", _LVIS, file="lvis_v1_val.json", split="val",
             upstream="https://github.com/facebookresearch/detectron2/issues/670"),
    Accepted("string_ids_used_consistently", _STRING_IDS,
             upstream="https://github.com/cocodataset/cocoapi/issues/373"),
    Accepted("string_image_ids_with_integer_category_ids", _STRING_IMAGE_IDS),
    Accepted("string_image_and_annotation_ids_with_integer_category_ids", _STRING_IMAGE_AND_ANNOTATION_IDS),
    Accepted("unicode_file_names", _UNICODE),
    Accepted("image_without_annotations", _NO_ANNOTATIONS,
             upstream="https://github.com/pylabel-project/pylabel/pull/44"),
    Accepted("keypoints_and_captions_in_one_file", _KEYPOINTS_AND_CAPTIONS, file="person_keypoints_val2017.json"),
    Accepted("crowd_with_compressed_rle", _CROWD, upstream="https://github.com/cocodataset/cocoapi/issues/135"),
    Accepted("segmentation_empty_list", _EMPTY_SEGMENTATION,
             upstream="https://github.com/cocodataset/cocoapi/issues/262"),
    Accepted("bbox_and_area_integers_beyond_float_precision", _HUGE_NUMBERS),
    Accepted("nan_and_infinity_in_extra_fields", _NON_FINITE_EXTRAS),
    Accepted("utf8_bom", _PLAIN, data=b"\xef\xbb\xbf" + _GOOD,
             upstream="https://github.com/cityjson/cjio/issues/21"),
    Accepted("gzip_under_a_json_name", _PLAIN, data=gzip.compress(_GOOD)),
    Accepted("zip_under_a_json_name", _PLAIN, data=_zip(FILE, _GOOD)),
]

"""pipeline.masks against its oracle, pycocotools: on every coco-mini annotation and on
random polygons, masks and run lists; and every InvalidMask message."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from pycocotools import mask as cmask
from pycocotools.coco import COCO

from pipeline import masks, rle, rlekernel
from pipeline.errors import CocolakeError
from pipeline.masks import InvalidMask

# pycocotools' mask.decode predates numpy 2's __array__(copy=...) and warns on every call
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

FILES = [
    "instances_train2017.json",
    "instances_val2017.json",
    "person_keypoints_train2017.json",
    "person_keypoints_val2017.json",
]
TRIANGLE = [1.0, 1.0, 4.0, 1.0, 4.0, 3.0]
SQUARE_5X5 = "6320004"  # pycocotools string of a 5x5 mask, see test_doc_examples


@pytest.fixture(scope="module")
def cocos(coco_mini) -> dict[str, COCO]:
    out = {}
    for name in FILES:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
            out[name] = COCO(str(coco_mini / "annotations" / name))
    return out


def batch(segmentations):
    """(coords, part_offsets, ann_offsets) of a list of polygon segmentations."""
    parts = [p for s in segmentations for p in s]
    coords = np.array([v for p in parts for v in p], dtype=np.float64)
    part_offsets = np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)
    ann_offsets = np.concatenate(([0], np.cumsum([len(s) for s in segmentations]))).astype(np.int64)
    return coords, part_offsets, ann_offsets


def encode(segmentations, heights, widths):
    return masks.encode_polygons(*batch(segmentations), heights, widths)


def oracle_polygons(parts, h, w) -> str:
    return cmask.merge(cmask.frPyObjects(parts, h, w))["counts"].decode()


def image_size(coco: COCO, ann) -> tuple[int, int]:
    image = coco.imgs[ann["image_id"]]
    return image["height"], image["width"]


def all_rles(cocos):
    """Every annotation of coco-mini as (counts str, [h, w], iscrowd)."""
    out = []
    for coco in cocos.values():
        for ann in coco.dataset["annotations"]:
            counts = coco.annToRLE(ann)["counts"].decode()
            out.append((counts, list(image_size(coco, ann)), ann["iscrowd"]))
    return out


class Tripwire:
    """Stands in for the C library: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"pycocotools C function {name} was reached")


# ------------------------------------------------------------------- real data
@pytest.mark.parametrize("name", FILES)
def test_polygons_equal_annToRLE(cocos, name):
    coco = cocos[name]
    anns = [a for a in coco.dataset["annotations"] if isinstance(a["segmentation"], list)]
    sizes = [image_size(coco, a) for a in anns]
    got = encode([a["segmentation"] for a in anns], [h for h, _ in sizes], [w for _, w in sizes])
    assert got == [coco.annToRLE(a)["counts"].decode() for a in anns]
    assert any(len(a["segmentation"]) > 1 for a in anns)  # merged parts are covered


@pytest.mark.parametrize("name", FILES)
def test_every_segmentation_equals_annToRLE(cocos, name):
    coco = cocos[name]
    crowd = 0
    for ann in coco.dataset["annotations"]:
        segm = ann["segmentation"]
        want = coco.annToRLE(ann)["counts"].decode()
        assert masks.encode_segmentation(segm, *image_size(coco, ann)) == want
        if isinstance(segm, dict):
            crowd += 1
            assert masks.encode_uncompressed(segm["counts"], segm["size"]) == want
            assert masks.check_compressed(want.encode(), segm["size"]) == want
            assert masks.counts_to_list(want) == segm["counts"]
    assert crowd > 0  # uncompressed crowd RLE is covered


def test_area_and_bbox_equal_pycocotools(cocos):
    rles = all_rles(cocos)
    strings, sizes = [s for s, _, _ in rles], [z for _, z, _ in rles]
    dicts = [{"counts": s.encode(), "size": z} for s, z in zip(strings, sizes)]
    got = masks.area(strings, sizes)
    assert got.dtype == np.int64
    # pycocotools' area() first builds np.array((n,), dtype=np.uint8), which numpy 2 refuses
    # for n > 255, so it is asked in slices
    want = np.concatenate([cmask.area(dicts[i:i + 255]) for i in range(0, len(dicts), 255)])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(masks.bbox(strings, sizes), cmask.toBbox(dicts))


def test_decode_equals_pycocotools(cocos):
    for counts, size, _ in all_rles(cocos)[::50]:
        got = masks.decode(counts, size)
        np.testing.assert_array_equal(got, cmask.decode({"counts": counts.encode(), "size": size}))
        assert masks.encode_mask(got) == counts


def test_arrow_input_equals_list_input(cocos):
    rles = all_rles(cocos)[:200]
    strings, sizes = [s for s, _, _ in rles], [z for _, z, _ in rles]
    chunked = pa.chunked_array([strings[:70], strings[70:]], pa.large_string())
    sliced = pa.array(["x"] + strings, pa.string()).slice(1)
    for column in (pa.array(strings), chunked, sliced, pa.array([s.encode() for s in strings])):
        np.testing.assert_array_equal(masks.area(column, sizes), masks.area(strings, sizes))
    np.testing.assert_array_equal(masks.bbox(chunked, np.array(sizes)), masks.bbox(strings, sizes))
    np.testing.assert_array_equal(masks.bbox(strings, pa.array(sizes)), masks.bbox(strings, sizes))


def test_python_api_fallback_gives_the_same_results(cocos, monkeypatch):
    coco = cocos["instances_val2017.json"]
    anns = coco.dataset["annotations"][:150]
    rles = all_rles(cocos)[:40]
    strings, sizes = [s for s, _, _ in rles], [z for _, z, _ in rles]
    want_bbox = masks.bbox(strings, sizes)
    want_mask = masks.decode(strings[0], sizes[0])
    want_area = masks.area(strings, sizes)
    want_runs = [masks.counts_to_list(s) for s in strings]
    monkeypatch.setattr(rle, "C", None)
    monkeypatch.setattr(rlekernel, "AVAILABLE", False)
    for ann in anns:
        want = coco.annToRLE(ann)["counts"].decode()
        assert masks.encode_segmentation(ann["segmentation"], *image_size(coco, ann)) == want
    np.testing.assert_array_equal(masks.bbox(strings, sizes), want_bbox)
    np.testing.assert_array_equal(masks.decode(strings[0], sizes[0]), want_mask)
    assert masks.encode_mask(want_mask) == strings[0]
    np.testing.assert_array_equal(masks.area(strings, sizes), want_area)
    assert [masks.counts_to_list(s) for s in strings] == want_runs
    with pytest.raises(InvalidMask, match="negative run -1 at position 1"):
        masks.counts_to_list("5O")


# ------------------------------------------------------------------- random input
half_pixels = st.integers(-40, 120).map(lambda v: v / 2)  # hits rleFrPoly's rounding ties
coordinate = st.one_of(half_pixels, st.floats(-25.0, 70.0, allow_nan=False))
polygon = st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=9).map(
    lambda points: [v for xy in points for v in xy])
annotation = st.tuples(st.integers(1, 45), st.integers(1, 45),
                       st.lists(polygon, min_size=1, max_size=4))


@settings(max_examples=150, deadline=None)
@given(st.lists(annotation, min_size=1, max_size=5))
def test_random_polygons_equal_pycocotools(anns):
    got = encode([parts for _, _, parts in anns], [h for h, _, _ in anns], [w for _, w, _ in anns])
    assert got == [oracle_polygons(parts, h, w) for h, w, parts in anns]


@settings(max_examples=20, deadline=None)
@given(st.lists(polygon, min_size=1, max_size=3))
def test_polygons_on_a_large_image_equal_pycocotools(parts):
    # 4200 x 4100 is over 2**24 pixels: strings are built in numpy there, not by rleToString
    h, w = 4200, 4100
    scaled = [[v * 40 for v in p] for p in parts]
    assert h * w >= rle.C_STRING_PIXELS
    assert encode([scaled], [h], [w]) == [oracle_polygons(scaled, h, w)]


binary_masks = arrays(np.bool_, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=14))


@settings(max_examples=150, deadline=None)
@given(binary_masks)
def test_random_masks_round_trip_and_equal_pycocotools(mask):
    counts = masks.encode_mask(mask)
    assert counts == cmask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
    back = masks.decode(counts, mask.shape)
    assert back.dtype == np.uint8 and back.shape == mask.shape
    np.testing.assert_array_equal(back, mask)
    assert masks.area([counts], [mask.shape])[0] == mask.sum()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**24 - 1), max_size=30))
def test_random_counts_equal_pycocotools_and_round_trip(runs):
    counts = masks.list_to_counts(runs)
    if runs:  # pycocotools cannot take an empty list
        want = cmask.frPyObjects({"counts": runs, "size": [1, max(sum(runs), 1)]}, 1, 1)["counts"]
        assert counts == want.decode()
    assert masks.counts_to_list(counts) == runs
    assert masks.counts_to_list(counts.encode()) == runs


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, masks.MAX_PIXELS), max_size=12))
def test_large_counts_round_trip(runs):
    assert masks.counts_to_list(masks.list_to_counts(runs)) == runs


def test_doc_examples():
    assert masks.list_to_counts([2, 3, 1, 1]) == "231N"
    assert masks.list_to_counts([0, 6, 1]) == "061"
    assert masks.list_to_counts([5, 20, 3, 40, 2]) == "5d03d0O"
    square = np.zeros((5, 5), np.uint8)
    square[1:4, 1:4] = 1
    want = cmask.encode(np.asfortranarray(square))["counts"].decode()
    assert masks.encode_mask(square) == SQUARE_5X5 == want


# ------------------------------------------------------------------- errors
def test_invalid_mask_is_a_cocolake_error_and_a_value_error():
    assert issubclass(InvalidMask, CocolakeError) and issubclass(InvalidMask, ValueError)


@pytest.mark.parametrize(("parts", "size", "message"), [
    ([[1, 1, 4, 1, 4]], (5, 5), r"^polygon has 5 coordinates; expected an even count >= 6$"),
    ([TRIANGLE, [1, 1, 3, 3]], (5, 5), r"polygon has 4 coordinates.*read 4 numbers as a box"),
    ([[1, 1]], (5, 5), r"polygon has 2 coordinates"),
    ([], (5, 5), r"segmentation has no polygons"),
    ([[1, 1, 4, float("nan"), 4, 3]], (5, 5), r"^coordinate nan is not finite$"),
    ([[1, 1, float("inf"), 1, 4, 3]], (5, 5), r"^coordinate inf is not finite$"),
    ([[1, 1, -float("inf"), 1, 4, 3]], (5, 5), r"^coordinate -inf is not finite$"),
    ([[1, 1, 2e8, 1, 4, 3]], (480, 640),
     r"^coordinate 2e\+08 is outside \[-12560, 12560\] "
     r"\(4 \* max\(height, width\) \+ 10000 for an image of height 480 and width 640\)$"),
    ([[1, 1, 4, 1, 4, -12561]], (480, 640), r"coordinate -12561 is outside \[-12560, 12560\]"),
    ([[0, 0, 90000, 0] * 20 + [0, 1]], (20000, 20000),
     r"^polygon outline is \d+ pixels long, more than 3355443: pycocotools traces it at 5x"),
    ([TRIANGLE], (0, 5), r"^image size \[0, 5\] is not 2 positive ints$"),
    ([TRIANGLE], (100000, 100000),
     r"image size \[100000, 100000\] has 10000000000 pixels, more than 536870911"),
])
def test_bad_polygons_are_rejected_before_reaching_c(monkeypatch, parts, size, message):
    monkeypatch.setattr(rle, "C", Tripwire())
    monkeypatch.setattr(rlekernel, "_ext", Tripwire())
    with pytest.raises(InvalidMask, match=message) as err:
        masks.encode_segmentation(parts, *size)
    assert err.value.index is None  # a single segmentation is not a batch
    with pytest.raises(InvalidMask, match="^annotation #0 in batch: ") as err:
        masks.encode_polygons(*batch([parts]), [size[0]], [size[1]])
    assert err.value.index == 0


def test_outline_limit_counts_points_as_rlefrpoly_does():
    # edges of 5x + 1, 6 and 5x + 1 points (the last one closes the polygon): 10x + 8
    limit = masks.MAX_OUTLINE_POINTS
    x = (limit - 8) // 10
    thin = [[0, 0, x, 0, x, 1]]
    over = [[0, 0, x + 1, 0, x + 1, 1]]
    pixels = (10 * (x + 1) + 8) / 5
    assert masks.validate_polygons(*batch([thin, over]), [1000, 1000], [500000, 500000]) == [
        None, f"polygon outline is {pixels:.0f} pixels long, more than {limit // 5}: "
        "pycocotools traces it at 5x resolution and allocates memory for every point"]


def test_batch_error_names_the_annotation_and_validate_lets_the_rest_through():
    segms = [[TRIANGLE], [[1, 1, 4, 1, 4]], [TRIANGLE, TRIANGLE], [[1, float("nan"), 4, 1, 4, 3]]]
    args = (*batch(segms), [5] * 4, [5] * 4)
    with pytest.raises(InvalidMask, match=r"^annotation #1 in batch: polygon has 5 coord") as err:
        masks.encode_polygons(*args)
    assert err.value.index == 1 and err.value.problem.startswith("polygon has 5")
    problems = masks.validate_polygons(*args)
    assert problems[0] is None and problems[2] is None
    assert "polygon has 5 coordinates" in problems[1] and "not finite" in problems[3]
    good = [s for s, p in zip(segms, problems) if p is None]
    assert encode(good, [5, 5], [5, 5]) == [oracle_polygons(s, 5, 5) for s in good]


def test_inconsistent_batch_arrays_are_rejected():
    coords, parts, anns = batch([[TRIANGLE]])
    with pytest.raises(InvalidMask, match=r"expected n, n, n \+ 1"):
        masks.encode_polygons(coords, parts, anns, [5, 5], [5])
    with pytest.raises(InvalidMask, match="part_offsets must be non-decreasing"):
        masks.encode_polygons(coords, [0, 99], anns, [5], [5])


@pytest.mark.parametrize(("call", "message"), [
    (lambda: masks.encode_uncompressed([3, 2, 4], [2, 5]),
     r"^RLE counts sum to 9, expected h\*w=10$"),
    (lambda: masks.encode_uncompressed([3, -2, 9], [2, 5]),
     r"^RLE counts has a negative run -2 at position 1$"),
    (lambda: masks.encode_uncompressed([3.0, 7.0], [2, 5]),
     r"^counts is not a string or list of ints: got list of float$"),
    (lambda: masks.encode_uncompressed([True, 9], [2, 5]),
     r"counts is not a string or list of ints: got list of bool, int"),
    (lambda: masks.encode_uncompressed([2**70, 0], [2, 5]),
     r"run of 1180591620717411303424 at position 0, more than"),
    (lambda: masks.encode_uncompressed([10], [0, 5]),
     r"^RLE size \[0, 5\] is not 2 positive ints$"),
    (lambda: masks.encode_uncompressed([10], [2, 5, 1]),
     r"^RLE size \[2, 5, 1\] is not 2 positive ints$"),
    (lambda: masks.encode_uncompressed([10], "2x5"), r"^RLE size '2x5' is not 2 positive ints$"),
    (lambda: masks.check_compressed(SQUARE_5X5, [5, 6]),
     r"^RLE counts sum to 25, expected h\*w=30$"),
    (lambda: masks.check_compressed("63~0004", [5, 5]),
     r"character '~' at position 2; expected characters '0' to 'o'"),
    (lambda: masks.check_compressed("632000o", [5, 5]), r"ends in the middle of a number"),
    (lambda: masks.check_compressed("0" + "o" * 6 + "0", [5, 5]),
     r"number longer than 6 characters at position 1; pycocotools decodes at most 6"),
    (lambda: masks.check_compressed("5O", [5, 5]),
     r"^RLE counts has a negative run -1 at position 1$"),
    (lambda: masks.check_compressed(None, [5, 5]),
     r"^counts is not a string or list of ints: got NoneType$"),
    (lambda: masks.decode("632000o", [5, 5]), r"ends in the middle of a number"),
    (lambda: masks.decode(SQUARE_5X5, [5, 6]), r"RLE counts sum to 25"),
    (lambda: masks.counts_to_list("6é"), r"character"),
    (lambda: masks.area(SQUARE_5X5, [[5, 5]]),
     r"expected a sequence of counts strings, got a single string"),
    (lambda: masks.area([SQUARE_5X5], [[5, 5], [5, 5]]), r"got 2 sizes for 1 masks"),
    (lambda: masks.area(pa.array([SQUARE_5X5, None]), [[5, 5]] * 2),
     r"^mask #1 in batch: counts is null$"),
    (lambda: masks.area([SQUARE_5X5, 7], [[5, 5]] * 2),
     r"^mask #1 in batch: counts is not a string: got int$"),
    (lambda: masks.bbox([SQUARE_5X5, SQUARE_5X5], [[5, 5], [5, -5]]),
     r"^mask #1 in batch: RLE size \[5, -5\] is not"),
    (lambda: masks.area(["5"], [[5, 5]]),
     r"^mask #0 in batch: RLE counts sum to 5, expected h\*w=25$"),
    (lambda: masks.area(["5"], pa.array([[5, 0]])), r"^mask #0 in batch: RLE size \[5, 0\] is not"),
    (lambda: masks.encode_mask(np.zeros((2, 3, 1))),
     r"mask has shape \(2, 3, 1\); expected \(height, width\)"),
    (lambda: masks.encode_mask(np.zeros((0, 3))), r"mask has shape \(0, 3\)"),
    (lambda: masks.encode_segmentation({"counts": [25], "size": [5, 5]}, 5, 6),
     r"RLE size \[5, 5\] does not match the image size \[5, 6\]"),
    (lambda: masks.encode_segmentation([1, 1, 4, 1, 4, 3], 5, 5),
     r"not a list of polygons \[\[x0, y0, \.\.\.\], \.\.\.\]: got list of int"),
    (lambda: masks.encode_segmentation("polygon", 5, 5), r"not a list of polygons or an RLE dict"),
    (lambda: masks.encode_segmentation([[1, 1, "a", 1, 4, 3]], 5, 5),
     r"polygon coordinates are not all numbers"),
])
def test_invalid_rle_messages(call, message):
    with pytest.raises(InvalidMask, match=message):
        call()


def test_rle_batch_encodes_the_good_items_and_names_the_bad_ones(cocos):
    crowd = [a["segmentation"] for c in cocos.values() for a in c.dataset["annotations"] if a["iscrowd"]][:5]
    assert crowd, "coco-mini has crowd annotations"
    items = [(c["counts"], tuple(c["size"])) for c in crowd]
    strings = [(cmask.frPyObjects(c, *c["size"])["counts"].decode(), tuple(c["size"])) for c in crowd]
    bad = [([1, 2, 3], (2, 2)), ("0o", (1, 1)), ("1\u00ff", (1, 1)), ([1, True], (1, 2)), ([1], (0, 1))]
    batch = items + [(s.encode(), size) for s, size in strings] + bad
    enc = masks.encode_rle_batch([c for c, _ in batch], [size for _, size in batch])
    want = [s for s, _ in strings] * 2
    assert enc.counts.to_pylist() == want + [None] * 5
    rles = [{"counts": s.encode(), "size": list(size)} for s, size in strings]
    assert enc.areas[:10].tolist() == [int(a) for a in cmask.area(rles)] * 2
    assert sorted(enc.problems) == list(range(10, 15))
    assert enc.problems[10] == "RLE counts sum to 6, expected h*w=4"
    assert "ends in the middle of a number" in enc.problems[11]
    assert "byte 0xc3" in enc.problems[12]
    assert "counts is not a string or list of ints" in enc.problems[13]
    assert "RLE size [0, 1] is not 2 positive ints" in enc.problems[14]
    for (counts, size), text in zip(batch[:10], want):  # one at a time: the same strings
        assert masks.encode_rle(counts, size)[0] == text


def test_a_non_ascii_byte_is_named_by_its_value():
    with pytest.raises(masks.InvalidMask, match="compressed counts has byte 0xc3 at position 1"):
        masks.check_compressed("1\u00ff", (1, 1))


@pytest.mark.parametrize("counts", ["632000o", "63~0004", "0" + "o" * 6 + "0", "6\x0020004", "6é"])
def test_malformed_strings_never_reach_c(monkeypatch, counts):
    # rleFrString reads past the end of a string cut in the middle of a number
    monkeypatch.setattr(rle, "C", Tripwire())
    for call in (lambda: masks.decode(counts, [5, 5]), lambda: masks.counts_to_list(counts),
                 lambda: masks.area([counts, counts], [[5, 5]] * 2)):
        with pytest.raises(InvalidMask):
            call()


def _outline_points(part) -> int:
    """rleFrPoly's outline length, vertex by vertex: points scaled by 5 and truncated to
    int, max(|dx|, |dy|) + 1 points per edge, the last vertex joined to the first."""
    xs = [math.trunc(5.0 * x + 0.5) for x in part[0::2]]
    ys = [math.trunc(5.0 * y + 0.5) for y in part[1::2]]
    k = len(xs)
    return sum(max(abs(xs[(j + 1) % k] - xs[j]), abs(ys[(j + 1) % k] - ys[j])) + 1 for j in range(k))


_SPAN = st.sampled_from([10.0, 1e3, 4e5, 2e6])  # the last two reach the outline limit in a few edges


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_SPAN, st.lists(st.lists(st.floats(-1, 1), min_size=6, max_size=16).filter(
    lambda p: len(p) % 2 == 0), min_size=1, max_size=2)), min_size=1, max_size=6))
def test_outline_limit_holds_for_every_part_of_a_batch(annotations):
    # an image of 1 x 500000 pixels accepts coordinates within +-2010000
    segms = [[[span * v for v in part] for part in parts] for span, parts in annotations]
    got = masks.validate_polygons(*batch(segms), [1] * len(segms), [500000] * len(segms))
    want = [any(_outline_points(p) > masks.MAX_OUTLINE_POINTS for p in s) for s in segms]
    assert [g is not None for g in got] == want
    assert all(g is None or g.startswith("polygon outline is ") for g in got)

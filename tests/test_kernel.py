"""pipeline.rlekernel (the C extension pipeline._rlekernel) against pycocotools: every
coco-mini annotation, and Hypothesis polygons and run lists built to hit its edge cases.

The fuzz tests run a few hundred examples each; ``COCOLAKE_FUZZ_EXAMPLES=20000`` (say)
runs that many instead.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as cmask
from pycocotools.coco import COCO

from pipeline import masks, rle, rlekernel

FILES = [
    "instances_train2017.json",
    "instances_val2017.json",
    "person_keypoints_train2017.json",
    "person_keypoints_val2017.json",
]
EXAMPLES = int(os.environ.get("COCOLAKE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_BATCHES = settings(FUZZ, max_examples=max(EXAMPLES // 8, 10))

needs_kernel = pytest.mark.skipif(not rlekernel.AVAILABLE, reason="pipeline._rlekernel is not built")


class Tripwire:
    """Stands in for pycocotools' C library: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"pycocotools C function {name} was reached")


def test_extension_is_built_in_ci():
    # CI installs the package, which compiles the extension: it must never fall back silently
    if os.environ.get("CI") != "true":
        pytest.skip("only CI guarantees an installed build")
    assert rlekernel.AVAILABLE, "pipeline._rlekernel did not build; masks fell back to pycocotools"


def flat(segmentations):
    """(coords, part_offsets, ann_offsets) of a list of polygon segmentations."""
    parts = [p for s in segmentations for p in s]
    coords = np.array([v for p in parts for v in p], dtype=np.float64)
    part_offsets = np.concatenate(([0], np.cumsum([len(p) for p in parts]))).astype(np.int64)
    ann_offsets = np.concatenate(([0], np.cumsum([len(s) for s in segmentations]))).astype(np.int64)
    return coords, part_offsets, ann_offsets


def assert_equals_oracle(enc: rlekernel.Batch, rles: list[dict]):
    """counts, area and bbox of every item byte-equal to pycocotools' RLE dicts."""
    assert enc.strings() == [r["counts"].decode() for r in rles]
    # one at a time: pycocotools' area() of a list fails on numpy 2 for some sizes
    np.testing.assert_array_equal(enc.areas, [int(cmask.area(r)) for r in rles])
    np.testing.assert_array_equal(enc.bboxes, np.array([cmask.toBbox(r) for r in rles]).reshape(-1, 4))


@pytest.fixture(scope="module")
def cocos(coco_mini) -> dict[str, COCO]:
    out = {}
    for name in FILES:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
            out[name] = COCO(str(coco_mini / "annotations" / name))
    return out


def sizes_of(coco: COCO, anns):
    h = np.array([coco.imgs[a["image_id"]]["height"] for a in anns], np.int64)
    w = np.array([coco.imgs[a["image_id"]]["width"] for a in anns], np.int64)
    return h, w


# ------------------------------------------------------------------- real data
@needs_kernel
@pytest.mark.parametrize("name", FILES)
def test_every_polygon_annotation_equals_annToRLE(cocos, name):
    coco = cocos[name]
    anns = [a for a in coco.dataset["annotations"] if isinstance(a["segmentation"], list)]
    h, w = sizes_of(coco, anns)
    want = [coco.annToRLE(a) for a in anns]
    for walk in (False, True):
        enc = rlekernel.encode_polygons(*flat([a["segmentation"] for a in anns]), h, w, walk_every_edge=walk)
        assert_equals_oracle(enc, want)
    assert sum(len(a["segmentation"]) > 1 for a in anns) >= 5  # joined parts are covered


@needs_kernel
@pytest.mark.parametrize("name", FILES)
def test_every_crowd_annotation_equals_annToRLE(cocos, name):
    coco = cocos[name]
    anns = [a for a in coco.dataset["annotations"] if isinstance(a["segmentation"], dict)]
    assert anns and all(isinstance(a["segmentation"]["counts"], list) for a in anns)
    runs = [a["segmentation"]["counts"] for a in anns]
    offsets = np.concatenate(([0], np.cumsum([len(r) for r in runs]))).astype(np.int64)
    h, w = sizes_of(coco, anns)
    enc = rlekernel.encode_runs(np.concatenate(runs), offsets, h, w)
    assert_equals_oracle(enc, [coco.annToRLE(a) for a in anns])


@needs_kernel
def test_ingest_batches_go_through_the_kernel(cocos, monkeypatch):
    # the batch encoders ingest calls produce pycocotools' strings without its C functions
    coco = cocos["instances_val2017.json"]
    anns = coco.dataset["annotations"]
    polys = [a for a in anns if isinstance(a["segmentation"], list)]
    crowd = [a for a in anns if isinstance(a["segmentation"], dict)]
    monkeypatch.setattr(rle, "C", Tripwire())
    h, w = sizes_of(coco, polys)
    enc = masks.encode_polygon_batch(*flat([a["segmentation"] for a in polys]), h, w)
    assert not enc.problems
    assert enc.counts.to_pylist() == [coco.annToRLE(a)["counts"].decode() for a in polys]
    np.testing.assert_array_equal(enc.areas, [cmask.area(coco.annToRLE(a)) for a in polys])
    enc = masks.encode_rle_batch([a["segmentation"]["counts"] for a in crowd],
                                 [a["segmentation"]["size"] for a in crowd])
    assert not enc.problems
    assert enc.counts.to_pylist() == [coco.annToRLE(a)["counts"].decode() for a in crowd]


@needs_kernel
def test_ctypes_fallback_gives_the_kernels_results(cocos, monkeypatch):
    coco = cocos["person_keypoints_train2017.json"]
    anns = [a for a in coco.dataset["annotations"] if isinstance(a["segmentation"], list)]
    h, w = sizes_of(coco, anns)
    args = (*flat([a["segmentation"] for a in anns]), h, w)
    want = masks.encode_polygon_batch(*args)
    monkeypatch.setattr(rlekernel, "AVAILABLE", False)
    got = masks.encode_polygon_batch(*args)
    assert got.counts.equals(want.counts) and got.counts.type == pa.string()
    np.testing.assert_array_equal(got.areas, want.areas)


@needs_kernel
def test_strings_wrap_as_an_arrow_column_without_copy(cocos):
    coco = cocos["instances_val2017.json"]
    anns = [a for a in coco.dataset["annotations"] if isinstance(a["segmentation"], list)][:50]
    enc = rlekernel.encode_polygons(*flat([a["segmentation"] for a in anns]), *sizes_of(coco, anns))
    column = enc.arrow()
    column.validate(full=True)
    assert column.type == pa.large_string()
    assert column.to_pylist() == enc.strings()
    assert column.buffers()[2].address == pa.py_buffer(enc.data).address


@needs_kernel
def test_skipped_items_get_empty_results():
    tri = [[1.0, 1.0, 4.0, 1.0, 4.0, 3.0]]
    enc = rlekernel.encode_polygons(*flat([tri, tri, tri]), [5] * 3, [5] * 3, skip=[False, True, False])
    assert enc.strings() == [cmask.merge(cmask.frPyObjects(tri, 5, 5))["counts"].decode(), "",
                             cmask.merge(cmask.frPyObjects(tri, 5, 5))["counts"].decode()]
    assert enc.areas[1] == 0 and not enc.bboxes[1].any()


@needs_kernel
@pytest.mark.parametrize("call, message", [
    (lambda: rlekernel.encode_polygons([0.0] * 6, [0, 6], [0, 2], [5], [5]), "annotation offsets"),
    (lambda: rlekernel.encode_polygons([0.0] * 6, [0, 8], [0, 1], [5], [5]), "part offsets"),
    (lambda: rlekernel.encode_polygons([0.0] * 4, [0, 4], [0, 1], [5], [5]), "fewer than 6"),
    (lambda: rlekernel.encode_polygons([0.0, 1e9, 0, 0, 1, 1], [0, 6], [0, 1], [5], [5]), "beyond 1e8"),
    (lambda: rlekernel.encode_polygons([0.0, np.nan, 0, 0, 1, 1], [0, 6], [0, 1], [5], [5]), "not finite"),
    (lambda: rlekernel.encode_polygons([0.0] * 6, [0, 6], [0, 1], [0], [5]), "image size"),
    (lambda: rlekernel.encode_polygons([0.0] * 6, [0, 6], [0, 1], [5, 5], [5]), "expected n heights"),
    (lambda: rlekernel.encode_runs([1, 2], [0, 2], [2], [2]), "do not sum to h\\*w"),
    (lambda: rlekernel.encode_runs([5, -1, 1], [0, 3], [1], [5]), "negative"),
])
def test_the_kernel_checks_what_keeps_it_memory_safe(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@needs_kernel
def test_integer_row_formula_equals_pycocotools_double_expression():
    # the kernel computes rows with integers; this runs both over every y near the image and
    # near the largest scaled coordinates (5 * 1e8); COCOLAKE_FUZZ_EXAMPLES above 10000 runs
    # every int
    if EXAMPLES > 10_000:
        ranges = [(-(2**31), 2**31 - 1)]
    else:
        ranges = [(-(2**22), 2**22), (5 * 10**8 - 2**20, 5 * 10**8 + 2**20), (-5 * 10**8 - 2**20, -5 * 10**8 + 2**20),
                  (2**31 - 2**20, 2**31 - 1), (-(2**31), -(2**31) + 2**20)]
    for h in (1, 480, 2**31 - 1):
        for lo, hi in ranges:
            assert rlekernel._ext.rows_differ(lo, hi, h) == 0


# ------------------------------------------------------------------- fuzz: polygons
def values(bound: float):
    """Coordinates in [-bound, bound], crowded on the 5x grid where pycocotools rounds."""
    k = int(bound * 10)
    tenths = st.integers(-k, k).map(lambda i: i / 10)  # 0.2 multiples (pixel centres) and halfway
    nudged = st.tuples(tenths, st.sampled_from([-1, 0, 1])).map(
        lambda t: float(np.nextafter(t[0], np.inf * t[1])) if t[1] else t[0])
    return st.one_of(nudged, st.integers(-int(bound), int(bound)).map(float),
                     st.floats(-bound, bound, allow_nan=False))


@st.composite
def parts_of(draw, h: int, w: int, many: bool):
    bound = min(1.3 * max(h, w) + 3, float(masks.coordinate_bound(h, w)))
    coord = values(bound)
    out = []
    for _ in range(draw(st.integers(1, 12 if many else 1))):
        kind = draw(st.sampled_from(["free", "free", "collinear", "repeats", "edge", "steep"]))
        n = draw(st.integers(3, 14))
        if kind == "collinear":  # degenerate: every vertex on one line
            x0, y0, x1, y1 = (draw(coord) for _ in range(4))
            ts = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, 0.25]), min_size=n, max_size=n))
            part = [v for t in ts for v in (x0 + t * (x1 - x0), y0 + t * (y1 - y0))]
        elif kind == "repeats":  # duplicate vertices: edges of length 0
            pts = [(draw(coord), draw(coord)) for _ in range(draw(st.integers(1, n)))]
            part = [v for _ in range(n) for v in draw(st.sampled_from(pts))]
        elif kind == "edge":  # at and beyond the image bounds, and huge
            side = st.sampled_from([0.0, -0.5, float(w), float(h), w - 0.5, h + 0.5, -bound, bound])
            part = [draw(st.one_of(side, coord)) for _ in range(2 * n)]
        elif kind == "steep":  # near-vertical edges: the steep branch of the crossing search
            x = draw(coord)
            part = [v for _ in range(n) for v in (x + draw(st.floats(-3, 3)), draw(coord))]
        else:
            part = [draw(coord) for _ in range(2 * n)]
        out.append(part)
    return out


@st.composite
def polygon_cases(draw):
    side = st.one_of(st.sampled_from([1, 2, 3, 5, 17, 480, 640, 10000]), st.integers(1, 700))
    h, w = draw(side), draw(side)
    many = h * w <= 4_000_000  # pycocotools' merge allocates h*w ints per joined annotation
    return h, w, draw(parts_of(h, w, many))


@needs_kernel
@FUZZ
@given(polygon_cases())
def test_fuzzed_polygons_equal_pycocotools(case):
    h, w, parts = case
    want = [cmask.merge(cmask.frPyObjects(parts, h, w))]
    assert_equals_oracle(rlekernel.encode_polygons(*flat([parts]), [h], [w]), want)
    # the point-by-point walk the kernel falls back to where a column would jump
    assert_equals_oracle(rlekernel.encode_polygons(*flat([parts]), [h], [w], walk_every_edge=True), want)


@needs_kernel
@FUZZ_BATCHES
@given(st.lists(polygon_cases(), min_size=1, max_size=6))
def test_fuzzed_batches_equal_one_at_a_time(cases):
    enc = rlekernel.encode_polygons(*flat([p for _, _, p in cases]), [h for h, _, _ in cases],
                                    [w for _, w, _ in cases])
    assert_equals_oracle(enc, [cmask.merge(cmask.frPyObjects(p, h, w)) for h, w, p in cases])


@needs_kernel
def test_polygons_far_outside_and_huge():
    # a 10000 x 10000 image, vertices at the coordinate bound, and a one-pixel image
    cases = [
        (10000, 10000, [[-40000.0, -40000.0, 50000.0, -40000.0, 50000.0, 50000.0, -40000.0, 50000.0]]),
        (10000, 10000, [[0.0, 0.0, 9999.9, 0.1, 5000.0, 9999.99, 0.1, 9999.0, 3.3, 1.7]]),
        (1, 1, [[0.0, 0.0, 1.0, 0.0, 1.0, 1.0]]),
        (1, 1, [[-0.5, -0.5, 1.5, -0.5, 1.5, 1.5, -0.5, 1.5]]),
        (1, 10000, [[-3.0, 0.2, 10003.0, 0.4, 10003.0, 0.6]]),
        (10000, 1, [[0.2, -3.0, 0.4, 10003.0, 0.6, 10003.0]]),
        # wider than 5 * width fits in a C int, far out along x
        (1, 500_000_000, [[99_999_000.0, -1.0, 1e8, 0.4, 99_999_500.0, 2.0, 99_999_000.2, 1.5]]),
    ]
    for h, w, parts in cases:
        for walk in (False, True):
            enc = rlekernel.encode_polygons(*flat([parts]), [h], [w], walk_every_edge=walk)
            assert_equals_oracle(enc, [cmask.merge(cmask.frPyObjects(parts, h, w))])
        assert masks.encode_segmentation(parts, h, w) == enc.strings()[0]


# ------------------------------------------------------------------- fuzz: run lists
@st.composite
def run_cases(draw):
    h, w = draw(st.integers(1, 60)), draw(st.integers(1, 60))
    cuts = sorted(draw(st.lists(st.integers(0, h * w), max_size=40)))
    runs = np.diff([0, *cuts, h * w]).tolist()  # zeros anywhere, including first and last
    return h, w, runs


@needs_kernel
@FUZZ
@given(st.lists(run_cases(), min_size=1, max_size=6))
def test_fuzzed_run_lists_equal_frPyObjects(cases):
    runs = [r for _, _, r in cases]
    offsets = np.concatenate(([0], np.cumsum([len(r) for r in runs]))).astype(np.int64)
    enc = rlekernel.encode_runs(np.array([v for r in runs for v in r], np.int64), offsets,
                                [h for h, _, _ in cases], [w for _, w, _ in cases])
    assert_equals_oracle(enc, [cmask.frPyObjects({"counts": r, "size": [h, w]}, h, w) for h, w, r in cases])


@needs_kernel
def test_large_runs_take_long_numbers():
    # runs near 2**28 take 6 characters, and their differences to the run two before can be
    # large and negative
    h, w = 2**14, 2**15 - 1
    runs = [5, 2**28, 7, 3]
    runs.append(h * w - sum(runs))
    enc = rlekernel.encode_runs(np.array(runs, np.int64), [0, len(runs)], [h], [w])
    assert_equals_oracle(enc, [cmask.frPyObjects({"counts": runs, "size": [h, w]}, h, w)])
    assert max(map(len, enc.strings())) > 12

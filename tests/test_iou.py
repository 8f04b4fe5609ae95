"""pipeline/iou.py: box and mask IoU of pairs, equal to pycocotools' ``mask.iou``.

Mask pairs are held to pycocotools on coco-mini (crowd regions, several image sizes) and
on Hypothesis run lists (empty and full masks, runs of length 0, different sizes, boxes
apart), through the compiled kernel and through pycocotools' own rleIou used without it."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as cm
from pycocotools.coco import COCO

from pipeline import iou, masks, rle, rlekernel
from pipeline.errors import InvalidMask

SQUARE_5X5 = "6320004"  # pycocotools string of a 5x5 mask (tests/test_masks.py)
needs_kernel = pytest.mark.skipif(not rlekernel.AVAILABLE, reason="pipeline._rlekernel is not built")


@pytest.fixture(params=["kernel", "pycocotools"])
def path(request, monkeypatch):
    """Each mask test runs through the kernel and through the path without it."""
    if request.param == "kernel" and not rlekernel.AVAILABLE:
        pytest.skip("pipeline._rlekernel is not built")
    if request.param == "pycocotools":
        monkeypatch.setattr(rlekernel, "AVAILABLE", False)
    return request.param


def matrix(dt, gt, crowd):
    """Every dt with every gt through the paired function (repeat / tile), as (n_dt, n_gt)."""
    d, g = np.repeat(np.arange(len(dt)), len(gt)), np.tile(np.arange(len(gt)), len(dt))
    a = masks.parse_batch([r["counts"] for r in dt], [list(r["size"]) for r in dt])
    b = masks.parse_batch([r["counts"] for r in gt], [list(r["size"]) for r in gt])
    return iou.rles_iou(a, b, np.asarray(crowd, bool)[g], d, g).reshape(len(dt), len(gt))


def test_box_iou_equals_pycocotools():
    rng = np.random.default_rng(0)
    dt = rng.uniform(0, 50, (40, 4))
    gt = rng.uniform(0, 50, (30, 4))
    crowd = rng.random(30) < 0.3
    expected = cm.iou(dt.tolist(), gt.tolist(), crowd.astype(int).tolist())
    d, g = np.repeat(np.arange(40), 30), np.tile(np.arange(30), 40)
    got = iou.box_iou(dt[d], gt[g], crowd[g]).reshape(40, 30)
    np.testing.assert_array_equal(got, expected)


def _rles(rng, n, h, w):
    out = []
    for _ in range(n):
        m = np.zeros((h, w), np.uint8, order="F")
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y:y + rng.integers(0, h), x:x + rng.integers(0, w)] = 1
        m[rng.random((h, w)) < 0.05] ^= 1
        out.append(cm.encode(np.asfortranarray(m)))
    return out


def test_mask_iou_equals_pycocotools_pair_by_pair(path):
    """Crowd and not, empty masks, boxes apart, and masks of another size (-1 where boxes overlap)."""
    rng = np.random.default_rng(1)
    dt = _rles(rng, 12, 20, 30) + _rles(rng, 3, 30, 20)
    gt = _rles(rng, 10, 20, 30) + [cm.encode(np.zeros((20, 30), np.uint8, order="F"))]
    crowd = (rng.random(len(gt)) < 0.3).astype(int)
    expected = np.asarray(cm.iou(dt, gt, crowd.tolist()))
    d, g = np.repeat(np.arange(len(dt)), len(gt)), np.tile(np.arange(len(gt)), len(dt))
    counts = lambda rs, idx: [rs[i]["counts"].decode() for i in idx]  # noqa: E731
    sizes = lambda rs, idx: [list(rs[i]["size"]) for i in idx]  # noqa: E731
    got = iou.mask_iou(counts(dt, d), sizes(dt, d), counts(gt, g), sizes(gt, g), crowd[g].astype(bool))
    np.testing.assert_array_equal(got.reshape(len(dt), len(gt)), expected)
    assert (got == -1).any() and (got == 0).any() and ((got > 0) & (got < 1)).any()
    np.testing.assert_array_equal(matrix(dt, gt, crowd), expected)


@pytest.fixture(scope="module")
def mini_rles(coco_mini):
    """Every instances annotation of coco-mini as a pycocotools RLE dict, and its iscrowd."""
    out = []
    for name in ("instances_train2017.json", "instances_val2017.json"):
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
            coco = COCO(str(coco_mini / "annotations" / name))
        out += [(coco.annToRLE(a), a["iscrowd"]) for a in coco.dataset["annotations"]]
    return out


def test_coco_mini_masks_equal_pycocotools_with_crowd(mini_rles, path):
    crowd = [r for r in mini_rles if r[1]]
    gt = mini_rles[:150] + crowd  # several image sizes: pairs of different sizes give -1
    dt = mini_rles[:200]
    flags = [g[1] for g in gt]
    want = np.asarray(cm.iou([d[0] for d in dt], [g[0] for g in gt], flags))
    got = matrix([d[0] for d in dt], [g[0] for g in gt], flags)
    np.testing.assert_array_equal(got, want)
    assert (got > 0).any() and (got == -1).any() and (got[:, 150:] > 0).any()


def _masks(draw, n, sizes):
    """n RLE dicts from run lists (runs of length 0 included), on sizes drawn from ``sizes``."""
    out = []
    for _ in range(n):
        h, w = draw(st.sampled_from(sizes))
        runs, left = [], h * w
        while left:
            r = draw(st.integers(0, left)) if draw(st.booleans()) else draw(st.integers(0, min(left, 3)))
            runs.append(r)
            left -= r
            if len(runs) > 40:
                runs.append(left)
                break
        if draw(st.booleans()):
            runs.append(0)  # a trailing run of length 0
        out.append({"counts": rle.to_string(np.array(runs, np.int64)).encode(), "size": [h, w]})
    return out


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_masks_equal_pycocotools(data):
    sizes = data.draw(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=2))
    dt = _masks(data.draw, data.draw(st.integers(1, 5)), sizes)
    gt = _masks(data.draw, data.draw(st.integers(1, 5)), sizes)
    crowd = data.draw(st.lists(st.booleans(), min_size=len(gt), max_size=len(gt)))
    want = np.asarray(cm.iou(dt, gt, [int(c) for c in crowd]))
    paths = [True, False] if rlekernel.AVAILABLE else [False]
    saved = rlekernel.AVAILABLE
    try:
        for available in paths:
            rlekernel.AVAILABLE = available
            np.testing.assert_array_equal(matrix(dt, gt, crowd), want)
    finally:
        rlekernel.AVAILABLE = saved


def test_empty_masks_and_boxes_apart(path):
    empty = cm.encode(np.zeros((6, 6), np.uint8, order="F"))
    left, right, small = (np.zeros((6, 6), np.uint8, order="F") for _ in range(3))
    left[:, :2], right[:, 4:], small[:, 5:] = 1, 1, 1
    other = np.zeros((4, 8), np.uint8, order="F")
    other[:, :1] = 1
    dt = [empty, cm.encode(left), cm.encode(right)]
    gt = [empty, cm.encode(right), cm.encode(small), cm.encode(other)]
    got = matrix(dt, gt, [0, 0, 1, 0])
    np.testing.assert_array_equal(got, np.asarray(cm.iou(dt, gt, [0, 0, 1, 0])))
    assert (got[0] == 0).all() and (got[:, 0] == 0).all()  # an empty mask overlaps nothing
    assert got[1, 1] == 0 and got[1, 3] == -1 and got[2, 3] == 0  # boxes apart: 0 whatever the size
    assert got[2, 2] == 0.5  # crowd: the intersection (one column) over the detection's area (two)


def test_no_pairs(path):
    a = masks.parse_batch([SQUARE_5X5], [[5, 5]])
    assert iou.rles_iou(a, a, np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0,)
    assert iou.mask_iou([], [], [], [], []).shape == (0,)


@pytest.mark.parametrize("call, message", [
    (lambda: iou.mask_iou([SQUARE_5X5], [[5, 5]], [SQUARE_5X5, "5"], [[5, 5]] * 2, [0, 0]),
     r"^b mask #1 in batch: RLE counts sum to 5"),
    (lambda: iou.mask_iou([SQUARE_5X5], [[5, 5]], [SQUARE_5X5], [[5, 5]], [0, 1]),
     r"^got 1 a masks, 1 b masks and 2 crowd flags for pairs; expected as many of each$"),
    (lambda: iou.rles_iou(masks.parse_batch([SQUARE_5X5], [[5, 5]]), masks.parse_batch([SQUARE_5X5], [[5, 5]]),
                          [0], [0], [1]),
     r"^pair index into the b masks out of range \[0, 1\)$"),
])
def test_messages(call, message):
    with pytest.raises(InvalidMask, match=message):
        call()


@needs_kernel
@pytest.mark.parametrize("change, message", [
    (dict(b_offsets=[0, 9]), "run offsets"),
    (dict(b_runs=[6, 3, 2, 1], b_offsets=[0, 4]), r"do not sum to h\*w"),
    (dict(b_heights=[0]), "RLE size"),
    (dict(b_index=[1]), "mask index out of range"),
    (dict(crowd=[0, 0]), "as many b indexes"),
])
def test_the_kernel_checks_what_keeps_it_memory_safe(change, message):
    runs = masks.parse_batch([SQUARE_5X5], [[5, 5]]).counts
    args = dict(a_runs=runs, a_offsets=[0, len(runs)], a_heights=[5], a_widths=[5], b_runs=runs,
                b_offsets=[0, len(runs)], b_heights=[5], b_widths=[5], a_index=[0], b_index=[0], crowd=[0])
    assert rlekernel.pair_iou(**args).tolist() == [1.0]
    with pytest.raises(ValueError, match=message):
        rlekernel.pair_iou(**{**args, **change})

"""pipeline/iou.py: box and mask IoU of pairs, equal to pycocotools' ``mask.iou``."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as cm

from pipeline import iou


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


def test_mask_iou_equals_pycocotools_pair_by_pair():
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

"""pipeline/evaluate/matching.py: IoU as pycocotools computes it."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as cm

from pipeline.evaluate import matching


def test_box_iou_equals_pycocotools():
    rng = np.random.default_rng(0)
    dt = rng.uniform(0, 50, (40, 4))
    gt = rng.uniform(0, 50, (30, 4))
    crowd = rng.random(30) < 0.3
    expected = cm.iou(dt.tolist(), gt.tolist(), crowd.astype(int).tolist())
    d, g = np.repeat(np.arange(40), 30), np.tile(np.arange(30), 40)
    got = matching.box_iou(dt[d], gt[g], crowd[g]).reshape(40, 30)
    np.testing.assert_array_equal(got, expected)

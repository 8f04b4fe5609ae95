"""iou: intersection over union as pycocotools computes it, one function per kind of pair.

``box_iou`` (pycocotools' ``bbIou``) for paired boxes; ``mask_iou`` (its ``rleIou``) for
paired compressed RLE masks, and ``rles_iou`` for pairs of masks taken by index from two
parsed batches (evaluation pairs every detection with each ground truth of its image).
Mask pairs are computed by the compiled kernel (``rlekernel.pair_iou``), or by pycocotools'
own ``rleIou`` pair by pair where it was not built; both equal pycocotools. Used by the
SQL functions and by evaluation. Imports the shared core only (masks, rle, rlekernel).
"""

from __future__ import annotations

import numpy as np

from . import masks, rle, rlekernel
from .errors import InvalidMask


def box_iou(a_boxes: np.ndarray, b_boxes: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired boxes [x, y, w, h], as pycocotools' ``bbIou`` (a crowd ``b``: over ``a``'s area)."""
    iw = np.minimum(a_boxes[:, 0] + a_boxes[:, 2], b_boxes[:, 0] + b_boxes[:, 2]) - np.maximum(a_boxes[:, 0], b_boxes[:, 0])
    ih = np.minimum(a_boxes[:, 1] + a_boxes[:, 3], b_boxes[:, 1] + b_boxes[:, 3]) - np.maximum(a_boxes[:, 1], b_boxes[:, 1])
    inter = iw * ih
    da = a_boxes[:, 2] * a_boxes[:, 3]
    union = np.where(crowd, da, da + b_boxes[:, 2] * b_boxes[:, 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = inter / union
    return np.where((iw > 0) & (ih > 0), out, 0.0)


def mask_iou(a_counts, a_sizes, b_counts, b_sizes, crowd) -> np.ndarray:
    """pycocotools ``mask.iou([a[k]], [b[k]], [crowd[k]])`` for every k: counts strings and
    [h, w] sizes; a bad mask raises ``InvalidMask`` naming it (``a mask #k``, ``b mask #k``)."""
    a, b = masks.parse_batch(a_counts, a_sizes, "a mask"), masks.parse_batch(b_counts, b_sizes, "b mask")
    return rles_iou(a, b, crowd)


def rles_iou(a: rle.Rles, b: rle.Rles, crowd, a_index=None, b_index=None) -> np.ndarray:
    """pycocotools ``rleIou`` of a[a_index[k]] with b[b_index[k]] for every pair k (no
    indexes: a[k] with b[k]); ``crowd[k]``: b's mask of the pair is a crowd region, whose
    IoU is the intersection over a's area. The box IoU comes first and the pixels only
    where it is > 0, so masks whose boxes do not overlap give 0 whatever their sizes, and
    masks of different sizes whose boxes overlap give -1."""
    n_pairs = len(a.heights) if a_index is None else len(a_index)
    a_index = np.arange(n_pairs) if a_index is None else np.asarray(a_index, np.int64)
    b_index = np.arange(n_pairs) if b_index is None else np.asarray(b_index, np.int64)
    crowd = np.asarray(crowd, bool).reshape(-1)
    if not len(a_index) == len(b_index) == len(crowd):
        raise InvalidMask(f"got {len(a_index)} a masks, {len(b_index)} b masks and {len(crowd)} crowd flags "
                          "for pairs; expected as many of each")
    for index, r, side in ((a_index, a, "a"), (b_index, b, "b")):
        if len(index) and (index.min() < 0 or index.max() >= len(r.heights)):
            raise InvalidMask(f"pair index into the {side} masks out of range [0, {len(r.heights)})")
    if rlekernel.AVAILABLE:
        return rlekernel.pair_iou(a.counts, a.offsets, a.heights, a.widths, b.counts, b.offsets, b.heights, b.widths,
                                  a_index, b_index, crowd)
    return _pycocotools_iou(a, b, crowd, a_index, b_index)


def _pycocotools_iou(a: rle.Rles, b: rle.Rles, crowd, a_index, b_index) -> np.ndarray:
    """``rles_iou`` without the kernel: pycocotools' own ``rleIou`` pair by pair (through
    ctypes, or its Python API where its extension does not export the C functions), so
    exact by construction, only slower."""
    out = np.zeros(len(a_index))
    if rle.C is None:
        from pycocotools import mask as cmask

        da, db = a.dicts(), b.dicts()
        for k, (i, j, c) in enumerate(zip(a_index.tolist(), b_index.tolist(), crowd.tolist())):
            out[k] = np.asarray(cmask.iou([da[i]], [db[j]], [int(c)]), dtype=float).reshape(-1)[0]
        return out
    sa, sb = a.structs(), b.structs()  # they point into a.counts, b.counts (alive here)
    flags = np.ascontiguousarray(crowd, np.uint8)
    base_a, base_b, size = sa.ctypes.data, sb.ctypes.data, sa.itemsize
    for k, (i, j) in enumerate(zip(a_index.tolist(), b_index.tolist())):
        rle.C.rleIou(base_a + i * size, base_b + j * size, 1, 1, flags.ctypes.data + k, out.ctypes.data + 8 * k)
    return out

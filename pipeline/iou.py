"""iou: intersection over union as pycocotools computes it, one function per kind of pair.

``box_iou`` (pycocotools' ``bbIou``) for paired boxes and ``mask_iou`` (its ``rleIou``) for
paired compressed RLE masks, both vectorised over the pairs; ``masks.iou`` gives the
(n_dt, n_gt) matrix of masks in C. Used by the SQL functions and by evaluation. Imports
the shared core only (masks, rle).
"""

from __future__ import annotations

import numpy as np

from . import masks, rle

_STRIDE = 1 << 30  # each pair's runs start at (pair index) * _STRIDE: one sorted array for a batch


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


def mask_iou(a_counts, a_sizes, b_counts, b_sizes, crowd, a_boxes=None, b_boxes=None) -> np.ndarray:
    """pycocotools ``rleIou`` pair by pair: the box IoU first, the pixels only where it is
    > 0, so boxes that do not overlap give 0 whatever the sizes, and masks of different
    sizes whose boxes overlap give -1. ``a_boxes``/``b_boxes``: the masks' boxes, when the
    caller has them (``masks.bbox``)."""
    crowd = np.asarray(crowd, bool).reshape(-1)
    a_boxes = masks.bbox(a_counts, a_sizes) if a_boxes is None else a_boxes
    b_boxes = masks.bbox(b_counts, b_sizes) if b_boxes is None else b_boxes
    a_sz, b_sz = np.asarray(a_sizes, np.int64).reshape(-1, 2), np.asarray(b_sizes, np.int64).reshape(-1, 2)
    overlap = box_iou(np.asarray(a_boxes).reshape(-1, 4), np.asarray(b_boxes).reshape(-1, 4), crowd) > 0
    same_size = (a_sz == b_sz).all(axis=1)
    out = np.where(overlap & ~same_size, -1.0, 0.0)
    need = np.flatnonzero(overlap & same_size)
    if need.size:
        a = rle.parse(_take(a_counts, need), a_sz[need])
        b = rle.parse(_take(b_counts, need), b_sz[need])
        out[need] = _parsed_pair_iou(a, b, crowd[need])
    return out


def _take(counts, rows: np.ndarray):
    take = getattr(counts, "take", None)  # an Arrow or NumPy array
    return take(rows) if take is not None else [counts[j] for j in rows.tolist()]


def _parsed_pair_iou(a: rle.Rles, b: rle.Rles, crowd: np.ndarray) -> np.ndarray:
    """Mask IoU of a[i] with b[i] for every i (parsed batches of the same sizes).

    A crowd ``b`` divides the intersection by ``a``'s area instead of the union, as
    pycocotools does. The whole batch is computed at once: every mask's run starts are
    shifted by (pair index) * 2**30, so ``b``'s starts form one sorted array, and the
    pixels of ``b`` under each foreground run of ``a`` are a difference of a cumulative
    count found with ``searchsorted``.
    """
    n = len(a.heights)
    if n == 0:
        return np.zeros(0)

    def runs(r):
        length = r.counts.astype(np.int64)
        owner = np.repeat(np.arange(n), np.diff(r.offsets))
        index = np.arange(len(length)) - r.offsets[:-1][owner]
        end = np.cumsum(length)
        mask_first = np.concatenate(([0], end))[r.offsets[:-1]]
        start = end - length - mask_first[owner] + owner * _STRIDE
        fg = (index % 2 == 1).astype(np.int64)
        return owner, start, length, fg

    a_owner, a_start, a_len, a_fg = runs(a)
    b_owner, b_start, b_len, b_fg = runs(b)
    b_before = np.cumsum(b_fg * b_len) - b_fg * b_len  # b's foreground before each run

    def covered(p):
        """b's foreground pixels before global position p (differences stay within a pair)."""
        k = np.searchsorted(b_start, p, side="right") - 1
        return b_before[k] + b_fg[k] * np.minimum(p - b_start[k], b_len[k])

    sel = (a_fg == 1) & (a_len > 0)
    s = a_start[sel]
    inter = np.bincount(a_owner[sel], weights=covered(s + a_len[sel]) - covered(s), minlength=n)
    area_a = np.bincount(a_owner, weights=a_fg * a_len, minlength=n)
    area_b = np.bincount(b_owner, weights=b_fg * b_len, minlength=n)
    union = np.where(crowd, area_a, area_a + area_b - inter)
    return np.divide(inter, union, out=np.zeros(n), where=(inter > 0) & (union > 0))

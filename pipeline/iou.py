"""iou: intersection over union as pycocotools computes it, one function per kind of pair.

``box_iou`` (pycocotools' ``bbIou``) for paired boxes; ``mask_iou`` (its ``rleIou``) for
paired compressed RLE masks, and ``rles_iou`` for pairs of masks taken by index from two
parsed batches (evaluation pairs every detection with each ground truth of its image).
Mask pairs are computed by the compiled kernel (``rlekernel.pair_iou``), or in NumPy where
it was not built; both equal pycocotools. Used by the SQL functions and by evaluation.
Imports the shared core only (masks, rle, rlekernel).
"""

from __future__ import annotations

import numpy as np

from . import masks, rle, rlekernel
from .errors import InvalidMask

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
    return _numpy_iou(a, b, crowd, a_index, b_index)


def _numpy_iou(a: rle.Rles, b: rle.Rles, crowd, a_index, b_index) -> np.ndarray:
    """``rles_iou`` without the kernel: the boxes by pycocotools' ``rleToBbox``, the pixels
    of the pairs that need them by ``_parsed_pair_iou``."""
    a_boxes, b_boxes = masks.rles_bbox(a)[a_index], masks.rles_bbox(b)[b_index]
    overlap = box_iou(a_boxes, b_boxes, crowd) > 0
    same_size = (a.heights[a_index] == b.heights[b_index]) & (a.widths[a_index] == b.widths[b_index])
    out = np.where(overlap & ~same_size, -1.0, 0.0)
    need = np.flatnonzero(overlap & same_size)
    if need.size:
        out[need] = _parsed_pair_iou(_take(a, a_index[need]), _take(b, b_index[need]), crowd[need])
    return out


def _take(r: rle.Rles, rows: np.ndarray) -> rle.Rles:
    """The masks ``rows`` of a parsed batch, as a batch of their own."""
    lengths = np.diff(r.offsets)[rows]
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    source = np.repeat(r.offsets[:-1][rows] - offsets[:-1], lengths) + np.arange(offsets[-1])
    return rle.Rles(r.counts[source], offsets, r.heights[rows], r.widths[rows])


def _parsed_pair_iou(a: rle.Rles, b: rle.Rles, crowd: np.ndarray) -> np.ndarray:
    """Mask IoU of a[i] with b[i] for every i (parsed batches of the same sizes), as rleIou.

    A crowd ``b`` divides the intersection by ``a``'s area instead of the union, as
    pycocotools does. The whole batch is computed at once: every mask's run starts are
    shifted by (pair index) * 2**30, so ``b``'s starts form one sorted array, and the
    pixels of ``b`` under each foreground run of ``a`` are a difference of a cumulative
    count found with ``searchsorted``. Pixels are only counted before ``_stops``: where
    rleIou's walk over the runs ends early.
    """
    n = len(a.heights)
    if n == 0:
        return np.zeros(0)
    ra, rb = _Runs(a, n), _Runs(b, n)
    stop = _stops(ra, rb, n)
    b_before = np.cumsum(rb.fg * rb.length) - rb.fg * rb.length  # b's foreground before each run

    def covered(p):
        """b's foreground pixels before global position p (differences stay within a pair)."""
        k = np.searchsorted(rb.start, p, side="right") - 1
        return b_before[k] + rb.fg[k] * np.minimum(p - rb.start[k], rb.length[k])

    def clipped(r: _Runs):
        """Start and end of each foreground run, cut at its pair's stop."""
        sel = (r.fg == 1) & (r.length > 0)
        end = stop[r.owner[sel]]
        return r.owner[sel], np.minimum(r.start[sel], end), np.minimum(r.start[sel] + r.length[sel], end)

    owner, s, e = clipped(ra)
    inter = np.bincount(owner, weights=covered(e) - covered(s), minlength=n)
    seen_a = np.bincount(owner, weights=e - s, minlength=n)
    owner_b, s_b, e_b = clipped(rb)
    seen_b = np.bincount(owner_b, weights=e_b - s_b, minlength=n)
    area_a = np.bincount(ra.owner, weights=ra.fg * ra.length, minlength=n)
    union = np.where(crowd, area_a, seen_a + seen_b - inter)
    return np.divide(inter, union, out=np.zeros(n), where=(inter > 0) & (union > 0))


class _Runs:
    """The runs of a batch of masks laid end to end: mask i's start at i * _STRIDE."""

    def __init__(self, r: rle.Rles, n: int):
        self.length = r.counts.astype(np.int64)
        self.owner = np.repeat(np.arange(n), np.diff(r.offsets))
        self.index = np.arange(len(self.length)) - r.offsets[:-1][self.owner]
        end = np.cumsum(self.length)
        mask_first = np.concatenate(([0], end))[r.offsets[:-1]]
        self.start = end - self.length - mask_first[self.owner] + self.owner * _STRIDE
        self.fg = (self.index % 2 == 1).astype(np.int64)
        self.last = np.zeros(len(self.length), bool)  # the last run of its mask
        self.last[r.offsets[1:][np.diff(r.offsets) > 0] - 1] = True
        self.first = r.offsets[:-1]


def _stops(ra: _Runs, rb: _Runs, n: int) -> np.ndarray:
    """Where rleIou stops walking the runs of each pair (a global position).

    Its loop ends as soon as the current runs of both masks are empty. Both masks end a
    run at the same pixel p and then both start a run of length 0: the walk stops at p. At
    the start it first takes each mask's first run without that test, so two masks whose
    first two runs are all empty stop at 0. Encoders never write runs of length 0 inside a
    mask (only the first), so this changes nothing for them.
    """
    stop = np.arange(n) * _STRIDE + (_STRIDE - 1)  # beyond every mask: no early stop

    def ends_before_empty(r: _Runs) -> np.ndarray:
        nxt = np.flatnonzero(~r.last[:-1]) if len(r.length) > 1 else np.zeros(0, np.int64)
        at = nxt[(r.length[nxt] > 0) & (r.length[nxt + 1] == 0)]
        return r.start[at] + r.length[at]

    common = np.intersect1d(ends_before_empty(ra), ends_before_empty(rb), assume_unique=True)
    owners, first = np.unique(common // _STRIDE, return_index=True)
    stop[owners] = common[first]

    def starts_empty(r: _Runs) -> np.ndarray:
        f = r.first
        two = ~r.last[np.minimum(f, len(r.length) - 1)] if len(r.length) else np.zeros(n, bool)
        ok = two.copy()
        ok[two] = (r.length[f[two]] == 0) & (r.length[f[two] + 1] == 0)
        return ok

    both = starts_empty(ra) & starts_empty(rb)
    stop[both] = np.flatnonzero(both) * _STRIDE
    return stop

"""Batch polygon and run-list encoder: COCO compressed RLE, area and bbox per mask; paired mask IoU.

Input: a whole chunk as flat arrays (coordinates with part and annotation offsets, or runs
with run offsets) and the image size of every item. Output: a ``Batch`` holding the counts
strings in one byte buffer with int64 offsets (an Arrow ``large_string`` column without a
copy, or ``string`` with int32 offsets and the same bytes), the area (int64) and the bbox
[x, y, width, height] (float64) of every mask.
Guarantee: byte for byte what pycocotools gives (``merge(frPyObjects(parts, h, w))`` or
``frPyObjects(rle, h, w)``, ``area``, ``toBbox``); the reasoning is in ``_rlekernel.c``.

The work is done by the C extension ``pipeline._rlekernel``, built at install time.
``AVAILABLE`` is False when it was not built (a source tree used without installing);
``pipeline.masks`` then uses pycocotools' own C functions instead, with the same results,
and ``pipeline.iou`` pycocotools' ``rleIou`` pair by pair in place of ``pair_iou``.
The inputs are validated by ``pipeline.masks`` first; the kernel re-checks what it needs to
stay memory-safe and raises ValueError naming the item.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

try:
    from pipeline import _rlekernel as _ext
except ImportError:  # not built: pipeline.masks falls back to pycocotools' C functions
    _ext = None

AVAILABLE = _ext is not None


class Batch(NamedTuple):
    """Encoded masks: string i is data[offsets[i]:offsets[i + 1]] (empty where skipped)."""

    data: bytes
    offsets: np.ndarray  # int64, n + 1
    areas: np.ndarray  # int64
    bboxes: np.ndarray  # float64, (n, 4)

    def strings(self) -> list[str]:
        """The counts strings as Python str (ASCII)."""
        text = self.data.decode("ascii")
        bounds = self.offsets.tolist()
        return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def arrow(self, valid: np.ndarray | None = None) -> pa.Array:
        """The counts strings as an Arrow large_string array, sharing the buffer; null where
        ``valid`` (bool per item) is False."""
        n = len(self.areas)
        bitmap, nulls = None, 0
        if valid is not None and not valid.all():
            bitmap, nulls = pa.py_buffer(np.packbits(valid, bitorder="little")), n - int(np.count_nonzero(valid))
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(self.offsets), pa.py_buffer(self.data), bitmap, nulls)

    def column(self, valid: np.ndarray | None = None) -> pa.Array:
        """``arrow(valid)`` as an Arrow string array (int32 offsets), the type of ``rle_counts``."""
        return self.arrow(valid).cast(pa.string())


def _i64(values) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int64)


def _skip(skip, n: int):
    return None if skip is None else np.ascontiguousarray(skip, dtype=bool).view(np.uint8).reshape(n)


def _outputs(n: int):
    return np.zeros(n + 1, np.int64), np.zeros(n, np.int64), np.zeros((n, 4), np.float64)


def encode_polygons(coords, part_offsets, ann_offsets, heights, widths, skip=None,
                    walk_every_edge: bool = False) -> Batch:
    """Annotation i owns parts ann_offsets[i]:ann_offsets[i + 1]; part j is the x0, y0, x1,
    y1, ... in coords[part_offsets[j]:part_offsets[j + 1]]; the parts are joined (union).
    Items with skip[i] set get an empty string, area 0 and bbox 0. ``walk_every_edge``
    traces every edge point by point as pycocotools does (the kernel's own fallback for
    edges where rounding makes a column jump), for the tests: slower, same result."""
    h, w = _i64(heights), _i64(widths)
    n = len(h)
    offsets, areas, bboxes = _outputs(n)
    data = _ext.encode_polygons(np.ascontiguousarray(coords, dtype=np.float64), _i64(part_offsets),
                                _i64(ann_offsets), h, w, _skip(skip, n), offsets, areas, bboxes,
                                walk_every_edge)
    return Batch(data, offsets, areas, bboxes)


def encode_runs(runs, run_offsets, heights, widths, skip=None) -> Batch:
    """Uncompressed RLE: item i has the runs runs[run_offsets[i]:run_offsets[i + 1]],
    which must sum to heights[i] * widths[i]."""
    h, w = _i64(heights), _i64(widths)
    n = len(h)
    offsets, areas, bboxes = _outputs(n)
    data = _ext.encode_runs(_i64(runs), _i64(run_offsets), h, w, _skip(skip, n), offsets, areas, bboxes)
    return Batch(data, offsets, areas, bboxes)


def pair_iou(a_runs, a_offsets, a_heights, a_widths, b_runs, b_offsets, b_heights, b_widths,
             a_index, b_index, crowd) -> np.ndarray:
    """pycocotools' ``rleIou`` of mask a_index[k] of batch a with mask b_index[k] of batch b
    (runs as uint32 with n + 1 offsets, as ``rle.Rles`` holds them); ``crowd[k]``: b's mask
    of pair k is a crowd region (the union is then a's area)."""
    ia = _i64(a_index)
    out = np.empty(len(ia), np.float64)
    _ext.pair_iou(np.ascontiguousarray(a_runs, np.uint32), _i64(a_offsets), _i64(a_heights), _i64(a_widths),
                  np.ascontiguousarray(b_runs, np.uint32), _i64(b_offsets), _i64(b_heights), _i64(b_widths),
                  ia, _i64(b_index), np.ascontiguousarray(crowd, dtype=bool).view(np.uint8).reshape(-1), out)
    return out

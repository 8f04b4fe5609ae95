"""encode: a chunk's polygons gathered for the mask encoder, whichever way each row's came in."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.encode import gather_polygons
from pipeline.ingest.parse import Geometry

_COORD = st.floats(-1e4, 1e4, allow_nan=False) | st.integers(-100, 100)
_POLYGON = st.lists(st.lists(_COORD, min_size=0, max_size=8), min_size=1, max_size=3)


def _geometry(rows: list[int], seg_value: list) -> Geometry:
    """What the extension gives for ``rows``: their polygons as flat arrays, in row order."""
    flat, part_offsets, ann_parts = [], [0], [0]
    for i in rows:
        for p in seg_value[i]:
            flat += p
            part_offsets.append(len(flat))
        ann_parts.append(len(part_offsets) - 1)
    empty = np.zeros(0, np.int64)
    return Geometry(np.array(rows, np.int64), np.array(flat, np.float64), np.array(part_offsets, np.int64),
                    np.array(ann_parts, np.int64), empty, np.zeros((0, 4)), list)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_POLYGON, st.booleans()), min_size=1, max_size=12))
def test_read_and_listed_polygons_in_one_chunk_gather_as_all_listed(rows):
    seg_value = [polygon for polygon, _ in rows]
    read = [i for i, (_, extracted) in enumerate(rows) if extracted]
    listed = [i for i, (_, extracted) in enumerate(rows) if not extracted]
    got = gather_polygons(_geometry(read, seg_value) if read else None, listed, seg_value)
    want = gather_polygons(None, list(range(len(rows))), seg_value)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and np.array_equal(g, w)
    assert np.array_equal(got[0].view(np.int64), want[0].view(np.int64))  # bit for bit: -0.0 too


def test_read_and_listed_polygons_interleaved():
    seg_value = [[[1, 2, 3, 4, 5, 6]], [[7.5, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18]], [[19, 20, 21, 22, 23, 24]],
                 [[25, 26, 27, 28, 29, 30, 31, 32]]]
    coords, part_offsets, ann_parts = gather_polygons(_geometry([1, 3], seg_value), [0, 2], seg_value)
    assert coords.tolist() == [float(x) for i in range(4) for p in seg_value[i] for x in p]
    assert part_offsets.tolist() == [0, 6, 12, 18, 24, 32] and ann_parts.tolist() == [0, 1, 3, 4, 5]

"""sqlfuncs: mask and keypoint functions for the DuckDB connections cocolake opens.

Input: a DuckDB connection. Output: the same connection with

- vectorised Arrow UDFs over compressed COCO RLE (``rle_counts`` + ``rle_size``), each
  called once per DuckDB vector (up to 2048 rows), never once per row, except
  ``rle_decode`` which writes one PNG per mask:

  ``rle_area(counts, size) -> BIGINT``            pycocotools ``mask.area``
  ``rle_bbox(counts, size) -> DOUBLE[]``          pycocotools ``mask.toBbox``: [x, y, w, h]
  ``rle_iou(a_counts, a_size, b_counts, b_size, iscrowd := false) -> DOUBLE``
                                                  pycocotools ``mask.iou`` of the pair,
                                                  ``b`` playing the ground truth: with
                                                  ``iscrowd`` the union is ``a``'s area;
                                                  masks of different sizes give -1 when
                                                  their boxes overlap, 0 otherwise
  ``rle_decode(counts, size) -> BLOB``            the mask as a 1-bit PNG (h x w)
  ``rle_runs(counts, size) -> BIGINT[]``          the uncompressed runs
  ``rle_from_polygons(polygons, height, width) -> VARCHAR``
                                                  compressed counts of COCO polygons
                                                  (pycocotools ``frPyObjects`` + ``merge``)

- the pure-SQL macros of ``sql/functions/*.sql`` (keypoint and box helpers). They need no
  Python, so ``cocolake views --db`` stores them in the database file it writes.

NULL in any argument gives NULL. An invalid RLE fails the query with what is wrong and
the offending value. The RLE arithmetic is ``pipeline.masks`` (pycocotools' C code) and
``pipeline.iou``.
"""

from __future__ import annotations

import io
import logging
import pathlib

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import iou, masks
from ..errors import QueryError
from .compat import sql_type
from .sqlfiles import SQL_DIR, load_sql_dir

log = logging.getLogger(__name__)

FUNCTIONS_DIR = SQL_DIR / "functions"

# names of the Python-backed functions (a plain DuckDB client does not have them)
PYTHON_FUNCTIONS = ("rle_area", "rle_bbox", "rle_iou", "rle_decode", "rle_runs", "rle_from_polygons")

# ------------------------------------------------------------------ Arrow plumbing
def _combine(arr) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _sizes(arr) -> np.ndarray | list:
    """``rle_size`` values as an (n, 2) int64 array, or Python lists when some are malformed."""
    arr = _combine(arr)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(arr)
    if len(arr) and (lengths == 2).all() and flat.null_count == 0:
        return flat.to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, 2)
    return arr.to_pylist()


def _show(counts: str | None, limit: int = 40) -> str:
    if counts is None:
        return "NULL"
    return repr(counts if len(counts) <= limit else counts[:limit] + "...")


def _checked(name: str, fn, counts, sizes):
    """Call a masks function; name the SQL function and the bad value when it refuses."""
    try:
        return fn()
    except masks.InvalidMask as err:
        i = err.index
        if i is None or i >= len(counts):
            raise masks.InvalidMask(f"{name}: {err.problem}") from None
        value, size = _combine(counts)[i].as_py(), _combine(sizes)[i].as_py()
        raise masks.InvalidMask(f"{name}: {err.problem} (counts {_show(value)}, size {size})") from None


# ------------------------------------------------------------------ the functions
def rle_area(counts, sizes) -> pa.Array:
    area = _checked("rle_area", lambda: masks.area(counts, _sizes(sizes)), counts, sizes)
    return pa.array(area, pa.int64())


def rle_bbox(counts, sizes) -> pa.Array:
    boxes = _checked("rle_bbox", lambda: masks.bbox(counts, _sizes(sizes)), counts, sizes)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    offsets = np.arange(0, 4 * len(boxes) + 1, 4, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(boxes.reshape(-1)))


def _runs(name: str, counts, sizes):
    """Runs + offsets + sizes of a batch of strings (``masks.parse_batch``: parsed and checked)."""
    return _checked(name, lambda: masks.parse_batch(counts, _sizes(sizes)), counts, sizes)


def rle_iou(a_counts, a_sizes, b_counts, b_sizes, iscrowd) -> pa.Array:
    """pycocotools ``rleIou`` pair by pair (``iou.rles_iou``); a bad mask names the function."""
    a, b = _runs("rle_iou", a_counts, a_sizes), _runs("rle_iou", b_counts, b_sizes)
    crowd = _combine(iscrowd).to_numpy(zero_copy_only=False).astype(bool)
    return pa.array(iou.rles_iou(a, b, crowd), pa.float64())


def rle_runs(counts, sizes) -> pa.Array:
    """The uncompressed runs; the offsets of the parsed batch are the list offsets."""
    r = _runs("rle_runs", counts, sizes)
    return pa.LargeListArray.from_arrays(pa.array(r.offsets, pa.int64()), pa.array(r.counts.astype(np.int64)))


def rle_decode(counts, sizes) -> pa.Array:
    """One 1-bit PNG per mask (Pillow reads it back as mode "1"; ``np.array(img)`` is bool).

    The runs are parsed (and checked) for the whole batch at once; each mask is then the
    alternating 0/1 runs laid out column by column, as pycocotools ``decode`` gives it.
    """
    from PIL import Image

    r = _runs("rle_decode", counts, sizes)
    out = []
    for i in range(len(r.heights)):
        runs = r.counts[r.offsets[i]:r.offsets[i + 1]]
        flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
        mask = flat.reshape((int(r.heights[i]), int(r.widths[i])), order="F")
        buf = io.BytesIO()
        # level 1: masks compress well anyway, and the default level is 3x slower
        Image.fromarray(mask).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return pa.array(out, pa.binary())


def rle_from_polygons(polygons, heights, widths) -> pa.Array:
    """Compressed counts of ``list<list<double>>`` polygons on images of height x width."""
    arr = _combine(polygons)
    parts = pc.list_flatten(arr)
    coords = pc.list_flatten(parts).to_numpy(zero_copy_only=False)
    # offsets relative to the flattened arrays (the array may be a slice of a larger one)
    ann_offsets = arr.offsets.to_numpy() - arr.offsets[0].as_py()
    part_offsets = parts.offsets.to_numpy() - parts.offsets[0].as_py()
    h = _combine(heights).to_numpy(zero_copy_only=False)
    w = _combine(widths).to_numpy(zero_copy_only=False)

    def encode():
        return masks.encode_polygons(coords, part_offsets, ann_offsets, h, w)

    try:
        return pa.array(encode(), pa.string())
    except masks.InvalidMask as err:
        where = f" (polygons #{err.index} of the batch: {str(arr[err.index])[:80]})" if err.index is not None else ""
        raise masks.InvalidMask(f"rle_from_polygons: {err.problem}{where}") from None


# ------------------------------------------------------------------ registration
_UDFS = [
    # (SQL name, Python function, argument types, return type)
    ("rle_area", rle_area, ["VARCHAR", "INTEGER[]"], "BIGINT"),
    ("rle_bbox", rle_bbox, ["VARCHAR", "INTEGER[]"], "DOUBLE[]"),
    ("rle_runs", rle_runs, ["VARCHAR", "INTEGER[]"], "BIGINT[]"),
    ("rle_decode", rle_decode, ["VARCHAR", "INTEGER[]"], "BLOB"),
    ("rle_from_polygons", rle_from_polygons, ["DOUBLE[][]", "BIGINT", "BIGINT"], "VARCHAR"),
    # called through the rle_iou macro, which gives iscrowd its default and casts it
    ("cocolake_rle_iou", rle_iou, ["VARCHAR", "INTEGER[]", "VARCHAR", "INTEGER[]", "BOOLEAN"], "DOUBLE"),
]

# temporary: never stored in a database file (a plain client has no cocolake_rle_iou)
_PYTHON_MACROS = """
CREATE OR REPLACE TEMP MACRO rle_iou(a_counts, a_size, b_counts, b_size, iscrowd := false) AS
    cocolake_rle_iou(a_counts, a_size, b_counts, b_size, CAST(iscrowd AS BOOLEAN));
"""


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Add the Python-backed mask functions and the SQL macros to a connection."""
    for name, fn, args, ret in _UDFS:
        try:
            con.remove_function(name)
        except (duckdb.Error, ValueError):
            pass
        con.create_function(name, fn, [sql_type(con, t) for t in args], sql_type(con, ret), type="arrow")
    con.execute(_PYTHON_MACROS)
    register_macros(con)


def register_macros(con: duckdb.DuckDBPyConnection, directory: pathlib.Path | None = None) -> None:
    """The pure-SQL macros of ``sql/functions`` (stored in the database when it is a file)."""
    for f in load_sql_dir(directory or FUNCTIONS_DIR).values():
        try:
            con.execute(f.text)
        except duckdb.Error as err:
            raise QueryError(f"{f.path.name}: {err}") from None

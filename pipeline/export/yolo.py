"""yolo: the subset in the Ultralytics layout: labels, data.yaml (images go beside them).

Input: a connection prepared by ``select.build_subset``. Output:

- ``<out>/labels/<split>/<file_name stem>.txt``: one line per object, ``class cx cy w h``
  (detect) or ``class x1 y1 x2 y2 ...`` (segment), coordinates divided by the image width
  and height and clipped to [0, 1]; an image without objects gets an empty file (a
  background image, not a missing label);
- ``<out>/data.yaml``: ``train``/``val``/``test`` image folders (a split whose name starts
  with one of those words, e.g. ``train2017``; other names are keys of their own),
  ``nc``, ``names`` and ``category_ids`` (class index → source category id). No ``path``:
  Ultralytics then resolves the folders relative to the YAML file itself.

Classes are contiguous, in category-id order, over the categories of the ``ClassMap``
(``--classes``: by default those the subset's annotations use; ``all``: every category of
the exported splits, so that for COCO's 80 categories, whose ids run 1..90 with gaps,
id 1 (person) → 0, ..., id 90 (toothbrush) → 79). Crowd annotations (``iscrowd=1``) are
left out unless ``include_crowd``; boxes, and outlines, with no width or height after
clipping (an object wholly outside the image) are left out; both are counted as
``skipped`` and, by reason, in the report's ``left_out``.

Segmentation: polygons come from the source polygons; an annotation with several parts
becomes one outline, each further part joined at the nearest pair of vertices by a
zero-width bridge (there and back). RLE-only masks (crowd regions, RLE stuff) are traced
with ``mask_outlines``: the outer boundary of each 4-connected region, following the
pixel edges (vertices on pixel corners), holes filled, then simplified with
Ramer-Douglas-Peucker to within ``SIMPLIFY_PX`` (0.75 px) of the traced outline. An
annotation with no mask at all is left out (reason ``no mask``).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import yaml

from .. import masks
from .images import safe_relpath
from .options import ExportError
from .select import arrow_batches, subset_categories

log = logging.getLogger(__name__)

SPLIT_KEYS = ("train", "val", "test")
# traced mask outlines are simplified to within this many pixels (Douglas-Peucker)
SIMPLIFY_PX = 0.75


# ---------------------------------------------------------------------------- geometry


def mask_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of a binary mask's 4-connected regions, as (k, 2) arrays of x, y corners.

    Every boundary edge between a foreground and a background pixel is directed so that
    the foreground is on its right (clockwise on screen, y pointing down); edges are then
    chained end to start, turning right where two edges leave a vertex (pixels touching
    only at a corner belong to different regions). Loops with positive signed area are
    outer boundaries; the others are holes and are dropped.
    """
    m = np.pad(np.asarray(mask) != 0, 1)
    # horizontal edges between padded rows y and y+1 -> original corner row y
    below, above = m[1:, 1:-1], m[:-1, 1:-1]
    ys, xs = np.nonzero(below & ~above)  # top edges of foreground: left -> right
    edges = [((x, y), (x + 1, y)) for y, x in zip(ys.tolist(), xs.tolist())]
    ys, xs = np.nonzero(above & ~below)  # bottom edges: right -> left
    edges += [((x + 1, y), (x, y)) for y, x in zip(ys.tolist(), xs.tolist())]
    right, left = m[1:-1, 1:], m[1:-1, :-1]
    ys, xs = np.nonzero(right & ~left)  # left edges of foreground: bottom -> top
    edges += [((x, y + 1), (x, y)) for y, x in zip(ys.tolist(), xs.tolist())]
    ys, xs = np.nonzero(left & ~right)  # right edges: top -> bottom
    edges += [((x, y), (x, y + 1)) for y, x in zip(ys.tolist(), xs.tolist())]

    dirs = [(b[0] - a[0], b[1] - a[1]) for a, b in edges]
    leaving: dict[tuple, list[int]] = {}
    for k, (a, _) in enumerate(edges):
        leaving.setdefault(a, []).append(k)

    def successor(k: int) -> int:
        options = leaving[edges[k][1]]
        if len(options) == 1:
            return options[0]
        dx, dy = dirs[k]
        right = (-dy, dx)  # a corner shared by two regions: turn right
        return next((c for c in options if dirs[c] == right), options[0])

    loops = []
    seen = bytearray(len(edges))
    for k0 in range(len(edges)):
        if seen[k0]:
            continue
        points = []
        k = k0
        while not seen[k]:
            seen[k] = 1
            nxt = successor(k)
            if dirs[nxt] != dirs[k]:
                points.append(edges[k][1])  # a corner: straight runs keep only their ends
            k = nxt
        loop = np.asarray(points, dtype=np.float64)
        if len(loop) >= 3 and _signed_area(loop) > 0:
            loops.append(loop)
    loops.sort(key=lambda p: -_signed_area(p))
    return loops


def simplify(loop: np.ndarray, tolerance: float = SIMPLIFY_PX) -> np.ndarray:
    """Ramer-Douglas-Peucker on a closed loop: drop vertices within ``tolerance`` of the outline."""
    if len(loop) <= 4:
        return loop
    far = int(np.argmax(((loop - loop[0]) ** 2).sum(1)))
    keep = np.zeros(len(loop), dtype=bool)
    keep[[0, far]] = True
    closed = np.concatenate([loop, loop[:1]])
    stack = [(0, far), (far, len(loop))]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        p, q = closed[a], closed[b]
        seg = q - p
        pts = closed[a + 1: b] - p
        norm = float(np.hypot(*seg))
        if norm == 0:
            dist = np.hypot(pts[:, 0], pts[:, 1])
        else:
            dist = np.abs(seg[0] * pts[:, 1] - seg[1] * pts[:, 0]) / norm
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            mid = a + 1 + k
            keep[mid % len(loop)] = True
            stack += [(a, mid), (mid, b)]
    out = loop[keep]
    return out if len(out) >= 3 else loop


def _signed_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def join_outlines(parts: list[np.ndarray]) -> np.ndarray:
    """Several outlines as one: each part joined at its nearest vertex pair, there and back."""
    path = parts[0]
    for part in parts[1:]:
        d = ((path[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        rolled = np.roll(part, -j, axis=0)
        path = np.concatenate([path[: i + 1], rolled, rolled[:1], path[i:]])
    return path


def box_line(cls: int, bbox, width: int, height: int) -> str | None:
    x, y, w, h = bbox
    x1, x2 = np.clip([x / width, (x + w) / width], 0.0, 1.0)
    y1, y2 = np.clip([y / height, (y + h) / height], 0.0, 1.0)
    if x2 <= x1 or y2 <= y1:
        return None
    return f"{cls} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"


def segment_line(cls: int, row: dict, width: int, height: int) -> str | None:
    fmt = row["segmentation_format"]
    if fmt == "polygon" and row["polygons"]:
        parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in row["polygons"] if len(p) >= 6]
    elif fmt in ("rle", "uncompressed_rle") and row["rle_counts"] is not None:
        parts = [simplify(p) for p in mask_outlines(masks.decode(row["rle_counts"], row["rle_size"]))]
    else:
        parts = []
    if not parts:
        return None  # no mask: a box drawn as a polygon would teach a rectangle
    pts = join_outlines(parts) / np.asarray([width, height], dtype=np.float64)
    pts = np.clip(pts, 0.0, 1.0)
    if np.ptp(pts[:, 0]) == 0 or np.ptp(pts[:, 1]) == 0:
        return None  # wholly outside the image: clipping flattens it onto the border
    return f"{cls} " + " ".join(f"{v:.6f}" for v in pts.ravel())


# ---------------------------------------------------------------------------- writing


def _split_key(split: str) -> str:
    for key in SPLIT_KEYS:
        if split.startswith(key):
            return key
    return split


def data_yaml(out_splits: list[str], cats: list[tuple[object, str]]) -> str:
    folders: dict[str, list[str]] = {}
    for s in out_splits:
        folders.setdefault(_split_key(s), []).append(f"images/{s}")
    data: dict = {k: (v[0] if len(v) == 1 else v) for k, v in folders.items()}
    data["nc"] = len(cats)
    data["names"] = {i: name for i, (_, name) in enumerate(cats)}
    data["category_ids"] = {i: cid for i, (cid, _) in enumerate(cats)}
    header = ("# Ultralytics dataset written by cocolake export; image folders are relative to this file.\n"
              "# category_ids: class index -> source category id\n")
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def label_path(out: str, out_split: str, file_name: str, image_id) -> str:
    rel = safe_relpath(file_name, image_id)
    stem, _ = os.path.splitext(rel)
    return os.path.join(out, "labels", out_split, *f"{stem}.txt".split("/"))


def _has_mask(row: dict) -> bool:
    if row["segmentation_format"] == "polygon":
        return any(len(p) >= 6 for p in row["polygons"] or ())
    return row["segmentation_format"] in ("rle", "uncompressed_rle") and row["rle_counts"] is not None


# {masks}: the mask columns (segment) or NULLs (detect: the widest column, polygons, is never
# decoded); {categories}: nothing, or the subset's categories ($1), which lets the scan skip
# the row groups of the others (``select.subset_categories``)
_ANN_SQL = (
    "SELECT e.out_split, a.split, a.image_id, a.category_id, a.iscrowd, a.bbox, {masks} "
    "FROM annotations AS a JOIN export_annotations AS e "
    "ON e.split = a.split AND e.source_file = a.source_file AND e.id = a.id{categories} "
    "ORDER BY e.out_split, a.split, a.image_id, a.source_file, a.record_index"
)
_MASKS = {"segment": "a.polygons, a.rle_counts, a.rle_size, a.segmentation_format",
          "detect": "NULL AS polygons, NULL AS rle_counts, NULL AS rle_size, NULL AS segmentation_format"}


def annotation_query(con, task: str) -> tuple[str, list]:
    """The SQL and parameters of the subset's annotation rows, with what ``task`` needs."""
    categories = subset_categories(con)
    if categories is None:
        return _ANN_SQL.format(masks=_MASKS[task], categories=""), []
    return _ANN_SQL.format(masks=_MASKS[task], categories=" WHERE list_contains($1, a.category_id)"), [categories]


_IMG_SQL = (
    "SELECT DISTINCT e.out_split, i.split, i.id, i.file_name, i.width, i.height "
    "FROM export_images AS e JOIN images AS i ON i.split = e.split AND i.id = e.id "
    "ORDER BY e.out_split, i.split, i.id"
)


def write_yolo(con, out: str, cmap, report, *, task: str = "detect", include_crowd: bool = False
               ) -> dict[str, dict[str, int]]:
    """Labels and data.yaml; the classes are ``cmap``'s targets (a ``ClassMap``), in id order.

    Each annotation not written is counted in ``report.left_out`` by reason.
    """
    cats = [(t.id, t.name) for t in cmap.targets]
    index = cmap.index()
    images = {}
    for out_split, split, image_id, file_name, width, height in con.execute(_IMG_SQL).fetchall():
        images[(out_split, split, image_id)] = (file_name, width, height)
    out_splits = sorted({k[0] for k in images})
    counts = {s: {"images": 0, "labels": 0, "skipped": 0} for s in out_splits}
    lines: dict[tuple, list[str]] = {key: [] for key in images}
    for batch in arrow_batches(con, *annotation_query(con, task), 20_000):
        for row in batch.to_pylist():
            key = (row["out_split"], row["split"], row["image_id"])
            image = images.get(key)
            cls = index.get(row["category_id"])
            reason = ("no image" if image is None else "unknown category" if cls is None
                      else "crowd" if row["iscrowd"] == 1 and not include_crowd else None)
            if reason:
                counts[row["out_split"]]["skipped"] += 1
                report.leave_out(reason)
                continue
            _, width, height = image
            if not width or not height:
                raise ExportError(f"image id={row['image_id']!r} ({row['split']}) has no width/height; "
                                  "YOLO coordinates are relative to the image size")
            if task == "segment":
                line = segment_line(cls, row, width, height)
                reason = "no mask" if line is None and not _has_mask(row) else "outside image"
            else:
                line = box_line(cls, row["bbox"], width, height) if row["bbox"] is not None else None
                reason = "no box" if row["bbox"] is None else "outside image"
            if line is None:
                counts[row["out_split"]]["skipped"] += 1
                report.leave_out(reason)
                continue
            lines[key].append(line)
    written: dict[str, str] = {}
    for key, (file_name, _, _) in images.items():
        path = label_path(out, key[0], file_name, key[2])
        if path in written and written[path] != key:
            raise ExportError(f"images {written[path]} and {key} both want the label file {path}")
        written[path] = key
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines[key]))
        counts[key[0]]["images"] += 1
        counts[key[0]]["labels"] += len(lines[key])
    with open(os.path.join(out, "data.yaml"), "w", encoding="utf-8") as f:
        f.write(data_yaml(out_splits, cats))
    return {f"labels/{s}": c for s, c in counts.items()}

"""report.dataset: the sections about the ground truth, and the SVG and drawing helpers
that the run sections share.

Sections: per-split summary, class histogram, box size distribution, category
co-occurrence, keypoint visibility and caption lengths (when there are any), samples.
Without an image root no image is fetched: masks and boxes are drawn on a grey canvas of
the image's size.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
import logging
import math

import numpy as np

from .. import masks
from ..errors import CocolakeError

log = logging.getLogger(__name__)

SPLIT_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f"]
FONT = "font-family:system-ui,sans-serif;font-size:11px"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def category_color(category_id) -> tuple[int, int, int]:
    """A stable, well separated colour per category (golden-ratio hues)."""
    h = (hash_id(category_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def hash_id(value) -> int:
    if isinstance(value, int):
        return value
    return sum((i + 1) * ord(c) for i, c in enumerate(str(value)))


# ------------------------------------------------------------------ SVG plots
def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``: steps of 1, 2 or 5 times a power of ten."""
    if top <= 0:
        return [0, 1]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(math.ceil(top / step)) + 1)]


def fmt_num(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def svg(name: str, label: str, width: int, height: int, body: list[str]) -> str:
    return (f'<svg class="plot" data-plot="{esc(name)}" role="img" aria-label="{esc(label)}" '
            f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" style="{FONT}">{"".join(body)}</svg>')


def legend(names: list[str], x: int, y: int) -> list[str]:
    out = []
    for i, n in enumerate(names):
        cx = x + i * 120
        out.append(f'<rect x="{cx}" y="{y - 9}" width="10" height="10" fill="{SPLIT_COLORS[i % 8]}"/>'
                   f'<text x="{cx + 14}" y="{y}">{esc(n)}</text>')
    return out


def hbar_chart(name: str, label: str, rows: list[str], series: dict[str, list[float]], unit: str = "") -> str:
    """Horizontal bars, one row per label, the series stacked (e.g. one per split)."""
    left, bar_w, row_h, top = 150, 520, 14, 40
    totals = [sum(vals[i] for vals in series.values()) for i in range(len(rows))]
    ticks = nice_ticks(max(totals, default=0))
    scale = bar_w / ticks[-1]
    height = top + row_h * len(rows) + 10
    body = legend(list(series), left, 14)
    for t in ticks:
        x = left + t * scale
        body.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 10}" stroke="#ddd"/>'
                    f'<text x="{x:.1f}" y="{top - 9}" text-anchor="middle">{fmt_num(t)}</text>')
    for i, row in enumerate(rows):
        y = top + i * row_h
        body.append(f'<text x="{left - 6}" y="{y + row_h - 4}" text-anchor="end">{esc(row)}</text>')
        x = left
        for k, (sname, vals) in enumerate(series.items()):
            w = vals[i] * scale
            if w > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 1}" width="{w:.1f}" height="{row_h - 2}" '
                            f'fill="{SPLIT_COLORS[k % 8]}"><title>{esc(row)}, {esc(sname)}: '
                            f'{fmt_num(vals[i])}{unit}</title></rect>')
            x += w
    return svg(name, label, left + bar_w + 40, height, body)


def vbar_chart(name: str, label: str, bins: list[str], series: dict[str, list[float]],
               markers: dict[float, str] | None = None, y_label: str = "") -> str:
    """Vertical bars, one group per bin, one bar per series; ``markers`` are dashed lines
    at fractional bin positions (e.g. COCO's area thresholds)."""
    left, plot_w, plot_h, top = 60, max(360, 26 * len(bins)), 220, 30
    group = plot_w / max(len(bins), 1)
    bar = (group - 4) / max(len(series), 1)
    ticks = nice_ticks(max((v for vals in series.values() for v in vals), default=0))
    scale = plot_h / ticks[-1]
    body = legend(list(series), left, 14)
    for t in ticks:
        y = top + plot_h - t * scale
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_num(t)}</text>')
    for i, b in enumerate(bins):
        x0 = left + i * group + 2
        for k, (sname, vals) in enumerate(series.items()):
            h = vals[i] * scale
            body.append(f'<rect x="{x0 + k * bar:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                        f'height="{h:.1f}" fill="{SPLIT_COLORS[k % 8]}"><title>{esc(b)}, {esc(sname)}: '
                        f'{fmt_num(vals[i])}</title></rect>')
        if len(bins) <= 24 or i % 2 == 0:
            cx, cy = left + (i + 0.5) * group, top + plot_h + 12
            body.append(f'<text x="{cx:.1f}" y="{cy}" text-anchor="end" '
                        f'transform="rotate(-40 {cx:.1f} {cy})">{esc(b)}</text>')
    for k, (pos, text) in enumerate((markers or {}).items()):
        x = left + pos * group
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#333" '
                    f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{top + 10 + 13 * k}">{esc(text)}</text>')
    body.append(f'<text x="12" y="{top + plot_h / 2:.0f}" transform="rotate(-90 12 {top + plot_h / 2:.0f})" '
                f'text-anchor="middle">{esc(y_label)}</text>')
    return svg(name, label, left + plot_w + 20, top + plot_h + 70, body)


def heatmap(name: str, label: str, names: list[str], matrix: list[list[float]], note: str) -> str:
    """A square matrix as cells shaded by value (square root scale), the value in the tooltip."""
    cell, left, top = 20, 120, 110
    peak = max((v for row in matrix for v in row), default=0) or 1
    n = len(names)
    body = []
    for i, row_name in enumerate(names):
        body.append(f'<text x="{left - 5}" y="{top + i * cell + 14}" text-anchor="end">{esc(row_name)}</text>')
        cx, cy = left + i * cell + 14, top - 5
        body.append(f'<text x="{cx}" y="{cy}" transform="rotate(-55 {cx} {cy})">{esc(row_name)}</text>')
        for j, v in enumerate(matrix[i]):
            shade = math.sqrt(v / peak)
            r, g, b = (int(255 - shade * (255 - c)) for c in (8, 48, 107))
            body.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell - 1}" height="{cell - 1}" '
                        f'fill="rgb({r},{g},{b})"><title>{esc(row_name)} + {esc(names[j])}: {fmt_num(v)} {esc(note)}'
                        f'</title></rect>')
    return svg(name, label, left + n * cell + 20, top + n * cell + 10, body)


# ------------------------------------------------------------------ data
def fetch_rows(con, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _split_series(rows: list[dict], key: str, value: str, keys: list, splits: list[str]) -> dict[str, list[float]]:
    table = {(r["split"], r[key]): r[value] or 0 for r in rows}
    return {s: [table.get((s, k), 0) for k in keys] for s in splits}


# ------------------------------------------------------------------ sections
def summary_section(con) -> str:
    rows = fetch_rows(con, "SELECT * FROM split_summary")
    cols = ["split", "images", "annotated_images", "annotations", "crowd", "annotations_per_image", "categories",
            "categories_used", "keypoint_annotations", "captions", "rejects"]
    head = "".join(f"<th>{esc(c.replace('_', ' '))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(
        f"<td>{esc(fmt_num(r[c]) if isinstance(r[c], (int, float)) else r[c])}</td>" for c in cols) + "</tr>"
        for r in rows)
    metrics = ["images", "annotations", "crowd", "keypoint_annotations", "captions"]
    series = {r["split"]: [r[m] for m in metrics] for r in rows}
    chart = hbar_chart("split-summary", "Records per split", [m.replace("_", " ") for m in metrics], series)
    return f"<h2>Splits</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{chart}"


def class_section(con, splits: list[str]) -> str:
    rows = fetch_rows(con, "SELECT split, category_id, category_name, annotations FROM category_stats")
    order = fetch_rows(con, "SELECT category_id, any_value(category_name) AS name, sum(annotations) AS n "
                       "FROM category_stats GROUP BY category_id ORDER BY n DESC, category_id")
    ids = [r["category_id"] for r in order]
    series = _split_series(rows, "category_id", "annotations", ids, splits)
    chart = hbar_chart("class-histogram", "Annotations per category", [r["name"] for r in order], series)
    return f"<h2>Class histogram</h2><p>Annotations per category (crowd included), stacked by split.</p>{chart}"


def box_section(con, splits: list[str]) -> str:
    # half-octave bins of sqrt(area): bin k holds 2^(k/2) <= sqrt(area) < 2^((k+1)/2)
    rows = fetch_rows(con, """
        SELECT split, CAST(least(greatest(floor(2 * log2(greatest(sqrt(area), 1))), 0), 21) AS INTEGER) AS bin,
               count(*) AS n
        FROM annotations WHERE area IS NOT NULL GROUP BY ALL""")
    bins = list(range(22))
    labels = [f"{2 ** (k / 2):.3g}" for k in bins]
    series = _split_series(rows, "bin", "n", bins, splits)
    chart = vbar_chart("box-sizes", "Object size distribution", labels, series,
                       markers={2 * math.log2(32): "32 (small | medium)", 2 * math.log2(96): "96 (medium | large)"},
                       y_label="annotations")
    buckets = fetch_rows(con, "SELECT split, area_bucket, count(*) AS n FROM annotations_enriched GROUP BY ALL")
    table = {(r["split"], r["area_bucket"]): r["n"] for r in buckets}
    body = "".join(f"<tr><td>{esc(s)}</td>" + "".join(f"<td>{fmt_num(table.get((s, b), 0))}</td>"
                                                        for b in ("small", "medium", "large")) + "</tr>" for s in splits)
    return ("<h2>Box sizes</h2><p>Annotations by the square root of their area in pixels (bins of half an "
            "octave), with COCO's area thresholds.</p>" + chart +
            f"<table><thead><tr><th>split</th><th>small</th><th>medium</th><th>large</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def cooccurrence_section(con, top: int = 20) -> str:
    rows = fetch_rows(con, """
        WITH image_categories AS (
            SELECT DISTINCT a.split, a.image_id, a.category_id FROM annotations AS a),
        leaders AS (
            SELECT category_id, count(*) AS images FROM image_categories
            GROUP BY category_id ORDER BY images DESC, category_id LIMIT $1)
        SELECT x.category_id AS a, y.category_id AS b, count(*) AS images
        FROM image_categories AS x
        JOIN image_categories AS y ON y.split = x.split AND y.image_id = x.image_id
        WHERE x.category_id IN (SELECT category_id FROM leaders) AND y.category_id IN (SELECT category_id FROM leaders)
        GROUP BY ALL""", [top])
    leaders = fetch_rows(con, """
        SELECT category_id, any_value(category_name) AS name, count(DISTINCT (split, image_id)) AS images
        FROM annotations_enriched GROUP BY category_id ORDER BY images DESC, category_id LIMIT $1""", [top])
    if not leaders:
        return ""
    index = {r["category_id"]: i for i, r in enumerate(leaders)}
    matrix = [[0.0] * len(leaders) for _ in leaders]
    for r in rows:
        matrix[index[r["a"]]][index[r["b"]]] = r["images"]
    chart = heatmap("cooccurrence", "Category co-occurrence", [str(r["name"]) for r in leaders], matrix, "images")
    return (f"<h2>Category co-occurrence</h2><p>Images on which both categories appear, for the {len(leaders)} "
            f"categories on the most images (the diagonal: images with the category).</p>{chart}")


def keypoint_section(con, splits: list[str]) -> str:
    rows = fetch_rows(con, "SELECT split, joint, any_value(joint_name) AS name, count(*) FILTER (WHERE v = 2) AS visible, "
                      "count(*) FILTER (WHERE v = 1) AS hidden FROM keypoint_joints GROUP BY split, joint")
    if not rows:
        return ""
    joints = sorted({r["joint"] for r in rows})
    names = {r["joint"]: r["name"] or f"joint {r['joint']}" for r in rows}
    series = {f"{s} {kind}": [next((r[kind] for r in rows if r["split"] == s and r["joint"] == j), 0) for j in joints]
              for s in splits for kind in ("visible", "hidden")}
    chart = hbar_chart("keypoint-visibility", "Labelled joints per joint", [names[j] for j in joints], series)
    return f"<h2>Keypoints</h2><p>Labelled joints: visible (v = 2) and hidden (v = 1), per split.</p>{chart}"


def caption_section(con, splits: list[str]) -> str:
    from ..query.checks import queries

    # the words of a caption as `cocolake query caption_length` counts them, 30 and more in one bar
    lengths_sql = queries()["caption_length"].text.strip().rstrip(";")
    rows = fetch_rows(con, f"SELECT split, least(words, 30) AS words, sum(captions) AS n FROM (\n{lengths_sql}\n) GROUP BY ALL")
    if not rows:
        return ""
    lengths = list(range(min(r["words"] for r in rows), max(r["words"] for r in rows) + 1))
    chart = vbar_chart("caption-lengths", "Caption length in words",
                       [f"{w}" + ("+" if w == 30 else "") for w in lengths],
                       _split_series(rows, "words", "n", lengths, splits), y_label="captions")
    return f"<h2>Captions</h2><p>Caption length in words.</p>{chart}"


# ------------------------------------------------------------------ samples
def sample_images(con, count: int) -> list[dict]:
    """The images with the most categories, spread over the splits (deterministic)."""
    splits = max(con.execute("SELECT count(DISTINCT split) FROM image_stats").fetchall()[0][0], 1)
    return fetch_rows(con, """
        SELECT i.split, i.image_id, i.file_name, i.width, i.height, i.annotations, img.coco_url
        FROM image_stats AS i JOIN images AS img ON img.split = i.split AND img.id = i.image_id
        WHERE i.annotations > 0 AND i.width > 0 AND i.height > 0
        QUALIFY row_number() OVER (PARTITION BY i.split ORDER BY i.distinct_categories DESC, i.annotations DESC,
                                   i.image_id) <= $1
        ORDER BY i.split, i.distinct_categories DESC, i.annotations DESC, i.image_id
        LIMIT $2""", [math.ceil(count / splits), count])


def load_image(row: dict, image_root: str | None):
    """The image as RGB, or None (no root given, or the file is not there)."""
    if not image_root:
        return None
    from PIL import Image

    from ..export.images import ImageJob, read_bytes

    job = ImageJob(row["image_id"], row["split"], row["split"], row["file_name"], row.get("coco_url"))
    try:
        data = read_bytes(job, image_root)
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (CocolakeError, OSError) as err:
        log.warning("report: %s", err)
        return None


def thumbnail(row: dict, image_root: str | None, thumb: int):
    """(RGB image at most ``thumb`` pixels on its long side, its scale, whether the real
    image was found): the image of ``row`` from ``image_root``, or a grey canvas of its size."""
    from PIL import Image

    w, h = int(row["width"]), int(row["height"])
    scale = min(1.0, thumb / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = load_image(row, image_root)
    found = img is not None
    img = Image.new("RGB", size, (128, 128, 128)) if img is None else img.resize(size, Image.BILINEAR)
    return img, scale, found


def draw_sample(con, row: dict, image_root: str | None, thumb: int = 360) -> tuple[str, bool]:
    """A JPEG data: URI of the image (or a grey canvas) with masks and boxes; found or not.

    Drawn at thumbnail size, so that lines and labels stay readable: masks are decoded at
    full size and scaled down as the alpha of their colour.
    """
    from PIL import Image, ImageDraw

    img, scale, found = thumbnail(row, image_root, thumb)
    w, h, size = int(row["width"]), int(row["height"]), img.size
    anns = fetch_rows(con, """
        SELECT a.category_id, a.category_name, a.iscrowd, a.bbox, a.rle_counts, a.rle_size
        FROM annotations_enriched AS a WHERE a.split = $1 AND a.image_id = $2
        ORDER BY a.area DESC, a.id""", [row["split"], row["image_id"]])
    for a in anns:  # largest first, so small objects stay visible on top
        if a["rle_counts"] and a["rle_size"] and list(a["rle_size"]) == [h, w]:
            mask = masks.decode(a["rle_counts"], list(a["rle_size"]))
            alpha = Image.fromarray((mask * (70 if a["iscrowd"] else 120)).astype(np.uint8))
            img.paste(Image.new("RGB", size, category_color(a["category_id"])), (0, 0),
                      alpha.resize(size, Image.BILINEAR))
    draw = ImageDraw.Draw(img)
    for a in anns:
        if not a["bbox"] or len(a["bbox"]) != 4 or None in a["bbox"]:
            continue
        color = category_color(a["category_id"])
        x, y, bw, bh = (v * scale for v in a["bbox"])
        draw.rectangle([x, y, x + bw, y + bh], outline=color, width=2)
        text = f"{a['category_name']}{' (crowd)' if a['iscrowd'] else ''}"
        left, top, right, bottom = draw.textbbox((0, 0), text)
        tx, ty = x, max(y - (bottom - top) - 3, 0)
        draw.rectangle([tx, ty, tx + right - left + 3, ty + bottom - top + 3], fill=color)
        draw.text((tx + 1 - left, ty + 1 - top), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), found


def samples_section(con, image_root: str | None, count: int) -> str:
    figures = []
    for row in sample_images(con, count):
        uri, found = draw_sample(con, row, image_root)
        note = "" if found else " · image file not available: masks on grey"
        figures.append(f'<figure><img src="{uri}" alt="{esc(row["file_name"])} with its annotations">'
                       f'<figcaption>{esc(row["split"])}/{esc(row["file_name"])} · {row["annotations"]} '
                       f'annotations{esc(note)}</figcaption></figure>')
    where = f"images from {esc(image_root)}" if image_root else "no image root given: masks and boxes on grey"
    return f'<h2>Samples</h2><p>Images with the most categories ({where}).</p><div class="grid">{"".join(figures)}</div>'

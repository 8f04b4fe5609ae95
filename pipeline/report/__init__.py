"""report: one self-contained HTML page that shows a dataset of the warehouse and its runs.

Input: a connection from ``views.connect`` (the views and the mask functions) and,
optionally, an image root (a directory, a ``.zip`` or a URL prefix, found as ``export``
finds images). Output: ``<out>/index.html``, or ``<out>`` when it is named ``*.html``.

Guarantees: the page needs nothing but itself. Plots are inline SVG drawn here (no
JavaScript, no fonts, no stylesheets fetched), sample images are JPEG ``data:`` URIs drawn
with Pillow, and without an image root no image is fetched: masks and boxes are drawn on a
grey canvas of the image's size. Same warehouse, same page.

``dataset`` draws the dataset's sections (splits, classes, box sizes, co-occurrence,
keypoints, captions, samples), ``runs`` one section per model run (PR curves, AP per
category, false positives, confusions, samples with their matches).
"""

from __future__ import annotations

import mimetypes
import pathlib

from ..errors import ConfigError
from .dataset import (caption_section, class_section, box_section, cooccurrence_section, esc, keypoint_section,
                      nice_ticks, samples_section, summary_section)
from .runs import run_sections

__all__ = ["caption_section", "nice_ticks", "render", "write_report"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin-top:20px}
table{border-collapse:collapse;margin:12px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}svg.plot{display:block;margin:12px 0;max-width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.small-multiples{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:4px}
.small-multiples svg.plot{margin:0}
figure{margin:0}figure img{width:100%;height:auto;display:block;border:1px solid #ccc}
figcaption{font-size:12px;color:#555;margin-top:4px;overflow-wrap:anywhere}.meta{color:#666;font-size:13px}
code{background:#f4f4f4;padding:1px 4px}
"""


def render(con, *, title: str, meta: str, image_root: str | None = None, samples: int = 12) -> str:
    splits = [r[0] for r in con.execute("SELECT split FROM split_summary ORDER BY split").fetchall()]
    sections = [summary_section(con), class_section(con, splits), box_section(con, splits),
                cooccurrence_section(con), keypoint_section(con, splits), caption_section(con, splits)]
    if samples > 0:
        sections.append(samples_section(con, image_root, samples))
    sections += run_sections(con, image_root, samples)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">{esc(meta)}</p>{''.join(s for s in sections if s)}"
            "</body></html>\n")


HTML_SUFFIXES = (".html", ".htm")


def page_path(out: str) -> pathlib.Path:
    """Where ``--out`` puts the page: ``<out>/index.html``, or ``out`` itself when it names an HTML file.

    An existing directory is always a directory. A name ending in ``.html``/``.htm`` is the
    page's file (replaced if it exists). A name that ends in another file type's suffix
    (``report.json``, ``plots.png``: a type Python's built-in table knows, so the answer is
    the same on every machine) is refused, since the report is only HTML and a directory of
    that name would surprise; any other name (``report``, ``run-2024.12``) is a directory.
    An existing file that is not HTML is refused, and left untouched.
    """
    target = pathlib.Path(out)
    if target.is_dir():
        return target / "index.html"
    if target.suffix.lower() in HTML_SUFFIXES:
        return target
    if target.exists():
        raise ConfigError(f"--out {out}: is a file, not a directory; the report is written to DIR/index.html "
                          "or to a file named *.html")
    kind = mimetypes.MimeTypes().guess_type(target.name, strict=False)[0]
    if kind is not None:
        raise ConfigError(f"--out {out}: the report is an HTML page, not {kind}; give a directory "
                          f"(DIR/index.html is written) or a file named *.html")
    return target / "index.html"


def write_report(warehouse: str, dataset: str, out: str, *, image_root: str | None = None,
                 samples: int = 12) -> pathlib.Path:
    """Render the report of ``<warehouse>/<dataset>`` into ``<out>/index.html`` or ``<out>`` (``page_path``)."""
    from ..query.views import connect
    from ..warehouse import Warehouse

    path = page_path(out)
    manifest = Warehouse(warehouse, dataset).require_manifest()
    con = connect(warehouse, dataset, restrict=True)
    try:
        meta = f"{warehouse}/{dataset}, version {manifest.version}, committed {manifest.committed_at}"
        page = render(con, title=f"cocolake report: {dataset}", meta=meta, image_root=image_root, samples=samples)
    finally:
        con.close()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write {path}: {err.strerror or err}") from None
    return path

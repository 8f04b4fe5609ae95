"""``cocolake report --out DIR|FILE.html [--image-root R]``: a self-contained HTML page with plots."""

from __future__ import annotations

import argparse

from .location import add_warehouse_options, settings


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report with plots and sample images",
        description="Write DIR/index.html (or FILE.html): per-split summary, class histogram, box sizes, category "
        "co-occurrence, keypoints, captions and a grid of sample images with their masks and boxes; "
        "then, per model run, PR curves, AP per category, false positives by cause, top confusions and "
        "sample images with their matches. One file, nothing fetched when it is opened.",
    )
    p.add_argument("--out", required=True, metavar="DIR|FILE.html",
                   help="a directory to write index.html into (created if missing), or the page's file "
                   "name when it ends in .html; another file suffix (.json, ...) or an existing non-HTML file "
                   "is refused")
    p.add_argument("--image-root", metavar="R",
                   help="where the image files are: a directory (<R>/<split>/<file_name> or <R>/<file_name>), "
                   "a .zip or a URL prefix; without it, masks are drawn on grey and nothing is fetched")
    p.add_argument("--samples", type=int, default=12, metavar="N", help="sample images to draw, and per evaluated run (default: 12; 0: none)")
    add_warehouse_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    s = settings(args)
    path = write_report(s["warehouse"], s["dataset"], args.out, image_root=s["image_root"],
                        samples=max(args.samples, 0))
    print(f"wrote {path}")
    return 0

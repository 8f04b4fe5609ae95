"""export: a subset of the warehouse, picked by one SQL predicate, as training data.

Input: a warehouse and dataset, a selector (``where`` predicate over
``annotations_enriched`` or ``sql`` query returning ``annotation_id``/``image_id``) and a
format. Output, under ``out`` (built beside it and renamed into place at the end, see ``output``;
``out`` must be new or empty, or an earlier export replaced with ``overwrite``):

- ``coco``: ``annotations/<kind>_<split>.json`` and the images at ``<split>/<file_name>``;
- ``yolo``: ``data.yaml``, ``labels/<split>/*.txt`` and ``images/<split>/<file_name>``;
- ``parquet``: ``<dataset>/...`` a warehouse of its own (manifest included), with the image
  bytes in ``images.image_bytes``;
- ``hf``: ``data/<split>-NNNNN-of-NNNNN.parquet``, one row per image with its objects, that
  Hugging Face ``datasets.load_dataset("parquet", data_dir=out)`` reads as it is.

``classes`` (``--classes``) says which categories are written, under which names and ids;
by default all of them for coco and parquet, those the subset uses for yolo and hf.

The stages: ``select`` (selector → temp tables of the subset's rows, on a read-only
connection), one writer per format (``coco``, ``yolo``, ``parquet``, ``hf``) and ``images``
(files copied, linked or fetched in parallel). ``export(...)`` mirrors
``cocolake export``::

    from pipeline.export import export
    export("out/giraffe", warehouse="warehouse", dataset="coco",
           where="category_name = 'giraffe' AND area_bucket = 'large'", format="coco", images="none")
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time

from . import classes, output, select
from ..defaults import DEFAULT_DATASET, DEFAULT_WAREHOUSE
from .options import ExportError, ExportOptions, ExportReport, Progress

__all__ = ["export", "run_export", "ExportOptions", "ExportReport", "ExportError"]

log = logging.getLogger(__name__)


def run_export(opts: ExportOptions, progress: Progress | None = None) -> ExportReport:
    """Write the export ``opts`` describes; ``progress(phase, done, total)`` for image transfers.

    The export is built beside ``opts.out`` and renamed to it at the end (``output``): a
    failure leaves ``opts.out`` as it was.
    """
    start = time.perf_counter()
    report = ExportReport(out=opts.out, format=opts.format)
    spec = classes.parse_classes(opts.class_choice)  # a bad class-map file fails before anything is written
    with contextlib.ExitStack() as hold:
        if opts.format == "parquet":
            from . import parquet

            hold.enter_context(parquet.target_lock(opts))
        with output.staged(opts) as build:
            _write(dataclasses.replace(opts, out=build), spec, report, progress)
    report.seconds = time.perf_counter() - start
    return report


def _write(opts: ExportOptions, spec, report: ExportReport, progress: Progress | None) -> None:
    with select.open_readonly(opts) as con:
        sel = select.build_subset(con, opts)
        file_rows = select.files(con, opts, sel)
        if not file_rows:
            raise ExportError(_nothing_message(opts))
        cmap, dropped = classes.apply(con, spec)
        report.leave_out("dropped class", dropped)
        # each format's writer is imported when used: a short export should not pay for
        # the libraries of the others (YAML, the mask codec, Parquet writing)
        if opts.format == "parquet":
            from . import parquet

            report.files = parquet.write_parquet(con, opts, file_rows, progress)
            return
        if opts.format == "hf":
            from . import hf

            report.files = hf.write_hf(con, opts, cmap, report, progress)
            return
        if opts.format == "coco":
            from . import coco

            report.files = coco.write_coco(con, opts.out, file_rows, None if cmap.identity else cmap)
            image_dir = opts.out
        else:
            from . import yolo

            report.files = yolo.write_yolo(con, opts.out, cmap, report, task=opts.task,
                                           include_crowd=opts.include_crowd)
            image_dir = os.path.join(opts.out, "images")
        if opts.images != "none":
            from . import images

            jobs = select.image_jobs(con)
            report.images_copied = images.copy_all(
                jobs, image_dir, image_root=opts.image_root, mode=opts.images, threads=opts.threads,
                progress=progress,
            )


def _nothing_message(opts: ExportOptions) -> str:
    if opts.where is not None:
        return f"--where {opts.where!r} matches no annotation; nothing to export"
    if opts.sql is not None:
        return "--sql: the query returns no id of this dataset; nothing to export"
    return f"dataset {opts.dataset!r} has nothing to export" + (
        f" in split(s) {', '.join(opts.splits)}" if opts.splits else "")


def export(
    out: str,
    *,
    format: str = "coco",
    warehouse: str = DEFAULT_WAREHOUSE,
    dataset: str = DEFAULT_DATASET,
    where: str | None = None,
    sql: str | None = None,
    splits=(),
    images: str = "copy",
    keep: str = "matching",
    split_ratio: float | None = None,
    seed: int = 0,
    image_root: str | None = None,
    task: str = "detect",
    include_crowd: bool = False,
    threads: int = 8,
    storage_options: dict | None = None,
    progress: Progress | None = None,
    allow_external_access: bool = False,
    overwrite: bool = False,
    out_storage_options: dict | None = None,
    classes: str | None = None,
) -> ExportReport:
    """``cocolake export`` as a function; the keywords are the command's options."""
    opts = ExportOptions(
        out=str(out), format=format, warehouse=str(warehouse), dataset=dataset, where=where, sql=sql,
        splits=splits, images=images, keep=keep, split_ratio=split_ratio, seed=seed,
        image_root=None if image_root is None else str(image_root), task=task, include_crowd=include_crowd,
        threads=threads, storage_options=storage_options, allow_external_access=allow_external_access,
        overwrite=overwrite, out_storage_options=out_storage_options,
        classes=None if classes is None else str(classes),
    )
    return run_export(opts, progress)

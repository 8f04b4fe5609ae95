"""summary: the stored rows of ``category_counts``, computed as a version is committed.

``category_stats`` counts, per split and category, the annotations, the images they are on
(``count(DISTINCT image_id)``) and the median area: a scan and two aggregates over every
annotation that cost more than the rest of a ``cocolake sql`` command together. A version
never changes, so each commit that changes a split's annotations computes them once
(``derived_parts``, the ``derive`` of ``Transaction.commit``) and stores them as the split's
part of the table ``category_counts``; the views read those rows when every split has them
(``views.counts_are_stored``), and compute them as before when not (a warehouse written
before this table, or a split no commit has counted since).

The rows are those of the ``category_counts`` view over the version to commit, on one
DuckDB thread: a parallel sum adds the areas in a varying order, which changes the last
bits of ``mean_area``, and a stored part is as deterministic as the parts it counts.
Imports the shared core and ``query.views``.
"""

from __future__ import annotations

import logging

from ..errors import CocolakeError, WarehouseError
from ..schema import schema_for
from ..warehouse import Manifest, Part, Transaction, write_part
from . import views
from .compat import executed_arrow

TABLE = "category_counts"

log = logging.getLogger(__name__)


def derived_parts(txn: Transaction, version: Manifest) -> list[Part]:
    """Write the ``category_counts`` part of each split of ``version`` without one; the parts.

    The counts are a shortcut, never data: when they cannot be computed (a part this
    process cannot read), a warning says so and the version commits without them, its
    views computing the rows from the annotations.
    """
    splits = version.missing_derived(TABLE)
    if not splits:
        return []
    try:
        return _write_counts(txn, version, splits)
    except (CocolakeError, OSError) as err:
        log.warning("%s: the per-category counts of %s are not stored (the views compute them): %s",
                    txn.warehouse.url(""), ", ".join(splits), err)
        return []


def _write_counts(txn: Transaction, version: Manifest, splits: list[str]) -> list[Part]:
    wh = txn.warehouse
    con = views.open_database(":memory:", durable=False)
    try:
        con.execute("SET threads = 1")
        con.execute("SET enable_progress_bar = false")
        # an object store's listings are cached, and the tasks wrote the new parts after them
        wh.fs.invalidate_cache()
        views.register_filesystem(con, wh)
        views.build(con, wh, version, only=[TABLE], raw_for=[TABLE], stored_counts=False)
        id_types = version.id_types()
        schema = schema_for(TABLE, id_types)
        names = ", ".join(schema.names)
        parts = []
        for split in splits:
            try:
                con.execute(f"SELECT {names} FROM {TABLE} WHERE split = ? ORDER BY category_id", [split])
                table = executed_arrow(con)
            except views.engine.Error as err:
                raise WarehouseError(f"{wh.url('')}: cannot count the categories of split {split}: "
                                     f"{views.short_error(err)}") from None
            rel = txn.part(TABLE, split, wh.next_part_number(split, version))
            rows = write_part(wh.fs, f"{wh.root}/{rel}", [table], schema)
            if rows:
                parts.append(Part(TABLE, split, "", rel, rows, id_types.text()))
        return parts
    finally:
        con.close()

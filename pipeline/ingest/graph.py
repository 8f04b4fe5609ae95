"""graph: builds the Dask graphs of an ingest; never computes them.

Two graphs, because the second one's shape depends on what the first finds:

1. ``plan_graph``: one ``plan_file`` task per source document (the structural scan).
2. ``ingest_graph``: per document, one ``ingest_chunk`` task per chunk of ``licenses``,
   ``categories`` and ``images``; their id → size lookups merge into one small object
   that every ``annotations`` chunk task of that document depends on; one ``write_info``
   task. Workers read their byte ranges from the source URL and write their parts to the
   warehouse URL themselves; only counts and ids travel back. A per-image set
   (``per_image``) needs no scan: one ``ingest_batch`` task per batch of its files.

Part numbers come from the chunk's position (document order, section order, chunk
order) on top of a per-split base, so the same input writes the same files whatever the
number of workers.

Task keys end in the run's ``run_id``: a Dask scheduler treats equal keys as one task,
so two runs on one cluster (two users, or a re-run while tasks of a killed run still
finish) would otherwise share each other's plans and results, and write each other's
parts.
"""

from __future__ import annotations

import dataclasses

import dask
from dask.delayed import Delayed

from .records import ImageSizes
from .plan import FilePlan, IngestOptions, plan_file
from .tasks import SECTION_ORDER, ChunkTask, TaskMeta, ingest_chunk, write_info
from .filesets import BATCH_TABLES, BatchTask, FileSet, ingest_batch
from ..warehouse import Part, Warehouse


def _key(name: str, run_id: str) -> str:
    return f"{name}-{run_id}" if run_id else name


def plan_graph(source_files: list, opts: IngestOptions, run_id: str = "") -> list[Delayed]:
    return [
        dask.delayed(plan_file, pure=True)(sf, opts, dask_key_name=_key(f"plan-{i}-{sf.name}", run_id))
        for i, sf in enumerate(source_files)
    ]


@dataclasses.dataclass
class IngestGraph:
    tasks: list[Delayed]  # -> ChunkResult, or rows written (info), in the order of ``meta``
    meta: list[TaskMeta]
    info_parts: list[Part]
    planned_paths: list[str]  # every part path a task may write (for cleanup on failure)


def _merge_sizes(results, id_type):
    return ImageSizes.merge([r.image_sizes for r in results], id_type)


def ingest_graph(plans: list[FilePlan], wh: Warehouse, bases: dict[str, int], opts: IngestOptions,
                 sets: list[FileSet] = (), run_id: str = "") -> IngestGraph:
    counters = dict(bases)
    storage = tuple(sorted(wh.storage_options.items()))
    tasks: list[Delayed] = []
    meta: list[TaskMeta] = []
    info_parts: list[Part] = []
    planned: list[str] = []

    def targets(split: str, tables: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        n = counters[split]
        counters[split] = n + 1
        out = []
        for table in tables + ("rejects",):
            rel = Warehouse.part_rel(table, split, n)
            planned.append(rel)
            out.append((table, f"{wh.root}/{rel}"))
        return tuple(out)

    for p_i, plan in enumerate(plans):
        ctx = plan.context
        split = plan.split
        image_results = []
        for section in SECTION_ORDER:
            if section == "annotations" and "annotations" in plan.chunks:
                sizes = dask.delayed(_merge_sizes, pure=True)(
                    image_results, plan.id_types.image, dask_key_name=_key(f"sizes-{p_i}", run_id)
                )
            else:
                sizes = None
            for c_i, (start, end, first_index) in enumerate(plan.chunks.get(section, [])):
                if section == "annotations":
                    tables = {"captions": ("captions",), "person_keypoints": ("annotations", "keypoints")}.get(
                        plan.kind, ("annotations",)
                    )
                else:
                    tables = (section,)
                task = ChunkTask(
                    plan_source=plan.source,
                    section=section,
                    start=start,
                    end=end,
                    first_index=first_index,
                    context=ctx,
                    targets=targets(split, tables),
                    storage_options=storage,
                    warehouse_protocol=wh.protocol,
                    sub_batch_bytes=opts.chunk_bytes,
                    row_group_rows=opts.row_group_rows,
                )
                d = dask.delayed(ingest_chunk, pure=True)(
                    task, sizes, dask_key_name=_key(f"chunk-{p_i}-{section}-{c_i}", run_id)
                )
                tasks.append(d)
                meta.append(TaskMeta("chunk", section, split, ctx.source_file))
                if section == "images":
                    image_results.append(d)
        n = counters[split]
        counters[split] = n + 1
        rel = Warehouse.part_rel("info", split, n)
        planned.append(rel)
        tasks.append(
            dask.delayed(write_info, pure=True)(
                plan, f"{wh.root}/{rel}", wh.protocol, storage, dask_key_name=_key(f"info-{p_i}", run_id)
            )
        )
        meta.append(TaskMeta("info", "info", split, ctx.source_file))
        info_parts.append(Part("info", split, ctx.source_file, rel, 1, plan.id_types.text()))
    for s_i, fileset in enumerate(sets):
        source_storage = tuple(sorted(fileset.storage_options.items()))
        for b_i, files in enumerate(fileset.batches(opts.chunk_bytes, opts.batch_files)):
            task = BatchTask(
                set_name=fileset.name,
                files=files,
                targets=targets(fileset.split, BATCH_TABLES),
                source_storage_options=source_storage,
                storage_options=storage,
                warehouse_protocol=wh.protocol,
                on_bad_record=opts.on_bad_record,
            )
            tasks.append(dask.delayed(ingest_batch, pure=True)(task, dask_key_name=_key(f"batch-{s_i}-{b_i}", run_id)))
            meta.append(TaskMeta("batch", "batch", fileset.split, fileset.name))
    return IngestGraph(tasks=tasks, meta=meta, info_parts=info_parts, planned_paths=planned)

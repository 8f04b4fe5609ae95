"""run: picks a scheduler, computes the ingest graphs, validates, commits.

The only place (with the CLI) that chooses where the graph runs (``cluster`` connects):
``workers=1`` → Dask's synchronous scheduler (debuggable, no processes);
``scheduler="tcp://host:port"`` → an existing distributed cluster;
otherwise a local cluster of one single-threaded worker process per core, unless the
documents are known to total at most ``IN_PROCESS_BYTES`` (``cluster.local_workers``: then
this process, as ``workers=1``). The scan runs
on the workers of an existing cluster, else in this process (while a local cluster starts).

A run either commits a new warehouse version or leaves the previous one as it was
(``Warehouse.transaction``): on any error the parts it wrote are removed and nothing is
committed. A run killed outright (SIGKILL, power loss) leaves its parts behind
unreferenced: readers never see them and the next commit's garbage collection removes them.
Imports the core, ``query`` (the summary's counts) and the modules of ``ingest``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
import uuid
from collections.abc import Callable

import dask

from . import filesets as per_image, sources
from ..query import summary, views
from ..defaults import DEFAULT_CACHE_DIR, DEFAULT_CHUNK_BYTES, DEFAULT_ROW_GROUP_ROWS, OnBadRecord
from ..errors import ClusterError, CocolakeError, ConfigError
from .cluster import local_workers, starting_client, worker_count
from .graph import ingest_graph, plan_graph
from .plan import IngestOptions
from .validate import check_duplicates, check_sets, check_unique_files, resolve_id_types
from ..warehouse import Part, Warehouse

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclasses.dataclass
class IngestReport:
    """What an ingest committed: the dataset's counts per split, and the rows of each file it wrote."""

    warehouse: str
    dataset: str
    version: int
    seconds: float
    rows: dict[tuple[str, str], int]  # (table, split) -> rows this run wrote
    rejects: int
    files: list[dict]
    # (split, source_file) -> {table: rows this run wrote}
    file_rows: dict[tuple[str, str], dict[str, int]] = dataclasses.field(default_factory=dict)
    # split -> {images, annotations, keypoints, captions, categories, rejects} as the views count
    # them after the commit (every split of the dataset); None when they could not be counted
    counts: dict[str, dict[str, int]] | None = None
    ran: str = ""  # where the tasks ran: "in this process", "on 2 local workers", "on the Dask cluster at ..."

    def lines(self, verbose: bool = False) -> list[str]:
        """The summary: per split, what the dataset now holds; with ``verbose`` the rows of each file."""
        out = [f"{self.warehouse}/{self.dataset}: version {self.version}, {self.seconds:.1f} s, "
               f"{len(self.files)} source file{'' if len(self.files) == 1 else 's'} ingested"
               + (f" {self.ran}" if self.ran else "")]
        if self.counts is not None:
            out += _table("split", COUNT_COLUMNS, [(s, [c[k] for k in COUNT_COLUMNS])
                                                   for s, c in self.counts.items()])
        if verbose or self.counts is None:
            out.append("  rows written, per source file:" if self.counts is not None
                       else "  rows written (the dataset could not be counted):")
            out += _table("split/source_file", FILE_COLUMNS, [
                (f"{s}/{f}", [rows.get(k, 0) for k in FILE_COLUMNS]) for (s, f), rows in sorted(self.file_rows.items())])
        if self.rejects:
            out.append(f"  {self.rejects} bad records skipped (see the rejects table)")
        return out


COUNT_COLUMNS = ("images", "annotations", "keypoints", "captions", "categories", "rejects")
FILE_COLUMNS = ("images", "annotations", "keypoints", "captions", "categories", "licenses", "rejects")


def _table(head: str, columns, rows: list[tuple[str, list[int]]]) -> list[str]:
    width = max([len(name) for name, _ in rows] + [len(head)])
    lines = [f"  {head:<{width}}  " + "  ".join(f"{c:>11}" for c in columns)]
    for name, values in rows:
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{v:>11}" for v in values))
    return lines


def _test_pause(stage: str) -> None:
    """Nothing, unless ``COCOLAKE_TEST_PAUSE_AT`` names ``stage``: then write the file named by
    ``COCOLAKE_TEST_PAUSE_FILE`` and wait until it is deleted, so that a test can kill the run
    or read the warehouse at a known point (tests/system/test_crash.py). Stages: ``scan``
    (sources planned), ``ingest:<n>`` (n ingest tasks done, their parts written), ``commit``
    (every part written, manifest not yet), ``gc`` (manifest written, garbage not yet collected).
    """
    if os.environ.get("COCOLAKE_TEST_PAUSE_AT") != stage:
        return
    marker = os.environ["COCOLAKE_TEST_PAUSE_FILE"]
    with open(marker, "w") as f:
        f.write(stage)
    while os.path.exists(marker):
        time.sleep(0.05)


def compute(tasks: list, client, progress: Progress | None, phase: str) -> list:
    total = len(tasks)
    if progress:
        progress(phase, 0, total)
    if client is None:
        from dask.callbacks import Callback

        done = [0]
        keys = {t.key for t in tasks}

        def posttask(key, result, dsk, state, worker_id):
            if key in keys:
                done[0] += 1
                if progress:
                    progress(phase, done[0], total)
                _test_pause(f"{phase}:{done[0]}")

        with Callback(posttask=posttask):
            # the function, not the name: for a name dask imports distributed (0.5-0.8 s) to look for a client
            return list(dask.compute(*tasks, scheduler=dask.local.get_sync))
    from distributed import as_completed

    futures = client.compute(tasks)
    try:
        with client.as_current():
            for i, fut in enumerate(as_completed(futures), 1):
                if fut.status == "error":
                    fut.result()  # raises the task's exception
                if progress:
                    progress(phase, i, total)
                _test_pause(f"{phase}:{i}")
        return client.gather(futures)
    except BaseException as err:
        # released, not cancelled: Scheduler.stimulus_cancel cancels a task's dependents
        # first, then asserts that someone still wants each of them when it meets them in
        # the list (distributed 2026.7), and logs the AssertionError as two tracebacks
        for fut in futures:
            fut.release()
        if client.cluster is None:  # a shared cluster's workers go on; a local one is closed by cluster.starting_client
            _wait_for_running(client, {f.key for f in futures})
        if type(err).__name__ == "KilledWorker":  # distributed.KilledWorker
            raise ClusterError(
                f"{phase}: Dask workers died while running task {err.task!r} "
                f"(the last one at {getattr(err.last_worker, 'address', err.last_worker)}); nothing was "
                "committed. Workers that die are often out of memory: give them more, or use a smaller --chunk-mb"
            ) from err
        raise


def _wait_for_running(client, keys: set, timeout: float = 60.0) -> None:
    """Wait until cancelled tasks that already run have ended.

    A running task cannot be stopped (it is a thread): it finishes and writes its part even
    after ``cancel``. The clean-up after a failure must come after that write, or the part
    stays behind (unreferenced, until the next commit's garbage collection).
    """

    def running(dask_worker, keys=keys) -> int:
        return sum(1 for ts in dask_worker.state.all_running_tasks if ts.key in keys)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not any(client.run(running).values()):
                return
        except Exception:  # noqa: BLE001 - a lost scheduler or worker: nothing more to wait for
            return
        time.sleep(0.1)
    log.warning("tasks still running %.0f s after the ingest failed; their parts may stay behind", timeout)


def run_ingest(
    urls: list[str] | None = None,
    *,
    source_specs: list | None = None,
    warehouse: str,
    dataset: str,
    split: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    on_bad_record: OnBadRecord = "error",
    cache_dir: str = DEFAULT_CACHE_DIR,
    checksums: dict | None = None,
    members: dict | None = None,
    storage_options: dict | None = None,
    progress: Progress | None = None,
    batch_files: int | None = None,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> IngestReport:
    t0 = time.perf_counter()
    opts = IngestOptions(chunk_bytes=int(chunk_bytes), on_bad_record=on_bad_record, split=split,
                         batch_files=batch_files, row_group_rows=int(row_group_rows))
    wh = Warehouse(warehouse, dataset, storage_options)
    # directories / globs of many small documents (SA-1B): batches of files, no scan
    sets, rest = per_image.find_sets(source_specs if source_specs is not None else urls or [],
                                     chunk_bytes=opts.chunk_bytes, batch_files=batch_files, split=split,
                                     storage_options=storage_options)
    if source_specs is not None:  # config.Source records: checksums, members, options, split
        source_files = sources.resolve_sources(rest, cache_dir=cache_dir)
        urls = [s.url for s in source_specs]
    else:
        source_files = sources.resolve(
            rest, cache_dir=cache_dir, checksums=checksums or {}, members=members,
            storage_options=storage_options,
        )
    if not source_files and not sets:
        raise ConfigError(f"no COCO JSON documents found in {', '.join(urls or []) or 'no sources'}")
    workers = local_workers(workers, scheduler, None if sets else [sf.size for sf in source_files])
    # the transaction removes this run's parts on failure after the client (and a local
    # cluster) is closed, which ends or kills a task still running: no part is written after
    with wh.transaction() as txn:
        with starting_client(workers, scheduler) as started:
            run_id = uuid.uuid4().hex[:12]  # task keys only (see graph); part names stay deterministic
            # a shared cluster's workers scan (they may see sources this process does not);
            # else this process, with the synchronous scheduler, while a local cluster starts
            plans = compute(plan_graph(source_files, opts, run_id), started() if scheduler else None, progress, "scan")
            _test_pause("scan")
            check_unique_files(plans, sets)
            manifest = wh.read_manifest()
            replaced = {(p.split, p.source.name) for p in plans} | {(s.split, s.name) for s in sets}
            resolved = resolve_id_types(plans, manifest, replaced)
            bases = {s: wh.next_part_number(s, manifest) for s in {p.split for p in plans} | {s.split for s in sets}}
            graph = ingest_graph(plans, wh, bases, opts, sets, run_id)
            txn.will_write(graph.planned_paths)
            results = compute(graph.tasks, started(), progress, "ingest")
        # the client (and a local cluster) is closed: no task of this run runs any more
        set_types = check_sets([s.name for s in sets], graph.meta, results, resolved)
        parts, rows, file_rows, rejects = _collect(graph, results, plans, set_types)
        check_duplicates(graph, results)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        src_meta = [
            {
                "split": p.split,
                "source_file": p.source.name,
                "url": p.source.url,
                "kind": p.kind,
                "id_type": p.id_types.text(),
                "records": p.records,
                "ingested_at": now,
            }
            for p in plans
        ] + per_image.describe_sets(sets, graph.meta, results, set_types, now)
        _test_pause("commit")
        committed = txn.commit(parts, replaced, src_meta, derive=summary.derived_parts)
        _test_pause("gc")  # the transaction's end collects the garbage, also on Ctrl-C here
    try:
        counts = views.split_counts(warehouse, dataset, storage_options)
    except CocolakeError as err:  # committed all the same; the summary shows the rows written
        log.warning("%s: version %d committed, but counting its rows failed: %s", wh.url(""), committed.version, err)
        counts = None
    return IngestReport(
        warehouse=warehouse,
        dataset=dataset,
        version=committed.version,
        seconds=time.perf_counter() - t0,
        rows=rows,
        rejects=rejects,
        files=src_meta,
        file_rows=file_rows,
        counts=counts,
        ran=(f"on the Dask cluster at {scheduler}" if scheduler else "in this process"
             if (n := worker_count(workers)) <= 1 else f"on {n} local workers"),
    )


def _collect(graph, results, plans, set_types=None):
    kinds = {p.source.name: p.id_types.text() for p in plans} | dict(set_types or {})
    parts: list[Part] = []
    rows: dict[tuple[str, str], int] = {}
    file_rows: dict[tuple[str, str], dict[str, int]] = {}
    rejects = 0
    for meta, res in zip(graph.meta, results):
        if meta.what == "info":
            continue
        split, source_file = meta.split, meta.source_file
        per_file = file_rows.setdefault((split, source_file), {})
        for table, path in res.written.items():
            rel = path.split(f"/{table}/split=", 1)[1]
            rel = f"{table}/split={rel}"
            parts.append(Part(table, split, source_file, rel, res.rows[table], kinds[source_file]))
        for table, n in res.rows.items():
            rows[(table, split)] = rows.get((table, split), 0) + n
            per_file[table] = per_file.get(table, 0) + n
        rejects += res.rejects
    for part in graph.info_parts:
        parts.append(part)
    return parts, rows, file_rows, rejects

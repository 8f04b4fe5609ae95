"""warehouse: the on-disk (or object-store) layout, part files, and the atomic commit.

Layout: ``<warehouse>/<dataset>/<table>/split=<split>/part-NNNNN.parquet`` plus
``<warehouse>/<dataset>/_manifest.json``. The manifest is the only source of truth for
cocolake's readers: they use exactly the parts it lists. Plain Parquet readers (pyarrow,
polars, DuckDB, Spark) read the table folders as Hive-partitioned datasets, so after every
commit, and after every run that fails and exits, each table folder holds exactly the parts
the manifest lists (``collect_garbage``).

Commit protocol: parts are written under part numbers that neither the current nor the
previous manifest uses; the new manifest is written to a temporary name and renamed over
``_manifest.json`` (a single PUT on object stores, which is atomic there). Only then are the
replaced version's parts moved out of the table folders to ``_trash/v<N>/`` (N: the version
they belonged to; a rename locally, copy and delete on object stores) and listed as the new
manifest's ``previous_parts``; they are deleted by the commit after. Files no manifest lists
(left by a killed run) are deleted. ``cocolake vacuum`` deletes all but the listed parts.

Re-ingesting a source file replaces the rows that came from that file in that split;
other files and splits stay.

One writer at a time: every writer (ingest, ingest-results, evaluate's match table, merge, a
parquet export) writes through ``Warehouse.transaction``, which holds ``writer_lock`` from
numbering its parts to the garbage collection after its commit: two writers would pick the
same part numbers, and the garbage collection of one would delete the other's parts.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import writerlock
from .defaults import name_problem
from .errors import WarehouseError
from .manifest import Manifest, Part
from .schema import DERIVED_FROM, PARTITION_KEYS, TABLES, partition_key

if TYPE_CHECKING:  # pyarrow is imported by the functions that read or write parts: a query needs none
    import pyarrow as pa

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
LOCK = "_writer.lock"
TRASH = "_trash"  # the replaced version's parts, out of the table folders, until the next commit
_PART_RE = re.compile(r"part-(\d+)\.parquet$")


class Warehouse:
    """A dataset directory: ``<warehouse>/<dataset>`` on any fsspec filesystem."""

    def __init__(self, warehouse: str, dataset: str, storage_options: dict | None = None):
        if problem := name_problem("dataset", dataset):
            raise WarehouseError(problem)
        self.warehouse = warehouse
        self.dataset = dataset
        self.storage_options = storage_options or {}
        # a local path needs no fsspec until a file operation (its import outweighs a short query)
        base, self._fs, self.protocol = _local_path(warehouse), None, "file"
        if base is None:
            self._fs, base = importlib.import_module("fsspec").core.url_to_fs(warehouse, **self.storage_options)
            self.protocol = self._fs.protocol if isinstance(self._fs.protocol, str) else self._fs.protocol[0]
        self.root = f"{base.rstrip('/')}/{dataset}"

    @property
    def fs(self):
        if self._fs is None:
            self._fs = importlib.import_module("fsspec").filesystem("file", **self.storage_options)
        return self._fs

    # -------------------------------------------------------------- paths

    def url(self, rel: str) -> str:
        """A path that fsspec, pyarrow and DuckDB all understand (local: absolute path)."""
        full = f"{self.root}/{rel}"
        if self.protocol in ("file", "local"):
            return os.path.abspath(full)
        return f"{self.protocol}://{full}"

    @staticmethod
    def part_rel(table: str, split: str, number: int) -> str:
        return f"{table}/{partition_key(table)}={split}/part-{number:05d}.parquet"

    # -------------------------------------------------------------- manifest

    def writer_lock(self):
        """Hold the dataset's writer lock, or fail at once if another run holds it
        (``writerlock.hold``: a local ``flock`` on ``_writer.lock``). Object stores have no
        such lock: there, run one writer per dataset at a time."""
        if self.protocol not in ("file", "local") or writerlock.fcntl is None:
            return contextlib.nullcontext()
        return writerlock.hold(self.root, LOCK, self.url(""))

    def read_manifest(self) -> Manifest | None:
        path = f"{self.root}/{MANIFEST}"
        try:
            with (open(path, "rb") if self._fs is None else self.fs.open(path, "rb")) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise WarehouseError(f"{self.url(MANIFEST)}: cannot read the manifest: {err}") from None
        return Manifest.from_json(data, self.url(MANIFEST))

    def require_manifest(self) -> Manifest:
        m = self.read_manifest()
        if m is None:
            raise WarehouseError(
                f"{self.url('')}: no warehouse here (no {MANIFEST}); run `cocolake ingest` first"
            )
        return m

    def next_part_number(self, split: str, manifest: Manifest | None) -> int:
        """First part number in ``split`` that neither the current nor the previous version uses."""
        used = -1
        if manifest is not None:
            paths = [p.path for p in manifest.parts] + manifest.previous_parts
            for path in paths:
                if any(f"/{key}={split}/" in path for key in {"split", *PARTITION_KEYS.values()}):
                    m = _PART_RE.search(path)
                    if m:
                        used = max(used, int(m.group(1)))
        return used + 1

    def next_manifest(self, new_parts: list[Part], replaced: set[tuple[str, str]], sources: list[dict]) -> Manifest:
        """The version a commit of these would publish (not written): the old parts minus
        ``replaced`` (split, source file) plus new. A derived table's part of a split whose
        source tables change goes too, unless ``new_parts`` brings its successor
        (``schema.DERIVED_FROM``)."""
        old = self.read_manifest()
        old_parts = old.parts if old else []
        gone = {p.path for p in old_parts if (p.split, p.source_file) in replaced}
        changed = {(p.table, p.split) for p in new_parts} | {(p.table, p.split) for p in old_parts if p.path in gone}
        stale = {(derived, split) for derived, tables in DERIVED_FROM.items()
                 for table, split in changed if table in tables or table == derived}
        gone |= {p.path for p in old_parts if (p.table, p.split) in stale}
        kept = [p for p in old_parts if p.path not in gone]
        old_sources = [s for s in (old.sources if old else []) if (s["split"], s["source_file"]) not in replaced]
        version = (old.version if old else 0) + 1
        return Manifest(
            dataset=self.dataset,
            version=version,
            committed_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            parts=sorted(kept + new_parts, key=lambda p: (p.table, p.split, p.path)),
            sources=old_sources + sources,
            previous_parts=sorted(trash_rel(version - 1, rel) for rel in gone),
        )

    def commit(self, new_parts: list[Part], replaced: set[tuple[str, str]], sources: list[dict],
               *, collect: bool = True) -> Manifest:
        """Atomically publish ``next_manifest(new_parts, replaced, sources)``.

        ``collect=False`` leaves the garbage collection to the caller (``collect_garbage``).
        """
        manifest = self.next_manifest(new_parts, replaced, sources)
        self._write_manifest(manifest)
        if collect:
            self.collect_garbage(manifest)
        return manifest

    def _write_manifest(self, manifest: Manifest) -> None:
        data = json.dumps(manifest.to_json(), indent=1, sort_keys=False).encode()
        final = f"{self.root}/{MANIFEST}"
        self.fs.makedirs(self.root, exist_ok=True)
        if self.protocol in ("file", "local"):
            tmp = f"{self.root}/.{MANIFEST}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)  # atomic on POSIX
        else:
            self.fs.pipe_file(final, data)  # one PUT: atomic on object stores

    def _rel(self, path: str) -> str:
        root = self.root.lstrip("/")
        path = path.lstrip("/")
        return path[len(root) + 1:] if path.startswith(root + "/") else path

    def files_under(self, rel: str) -> dict[str, int]:
        """Files under ``rel`` (relative to the dataset root) -> size in bytes."""
        try:
            found = self.fs.find(f"{self.root}/{rel}".rstrip("/"), detail=True)
        except FileNotFoundError:
            return {}
        return {self._rel(path): int(info.get("size") or 0) for path, info in found.items()
                if info.get("type", "file") != "directory"}

    def collect_garbage(self, manifest: Manifest | None) -> list[str]:
        """Make each table folder hold exactly the parts ``manifest`` lists.

        The replaced version's parts (``previous_parts``) move to ``_trash/``; any other file
        there that the manifest does not list (a killed run's parts) is deleted, and so is the
        trash of older versions. Returns the paths deleted. ``None``: nothing is committed,
        every part goes. Call it holding ``writer_lock``: it would delete a running writer's parts.
        """
        listed = {p.path for p in manifest.parts} if manifest else set()
        moves = {}
        for dest in manifest.previous_parts if manifest else []:
            origin = original_rel(dest)
            if origin != dest and origin not in listed:
                moves[origin] = dest
        removed = []
        for table in TABLES:
            for rel in self.files_under(table):
                if rel in listed:
                    continue
                if rel in moves:
                    dest = f"{self.root}/{moves[rel]}"
                    self.fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
                    self.fs.mv(f"{self.root}/{rel}", dest)
                else:
                    self.fs.rm(f"{self.root}/{rel}")
                    removed.append(rel)
        keep_trash = set(manifest.previous_parts) if manifest else set()
        for rel in self.files_under(TRASH):
            if rel not in keep_trash:
                self.fs.rm(f"{self.root}/{rel}")
                removed.append(rel)
        for name in self.fs.ls(self.root, detail=False) if self.fs.exists(self.root) else []:
            if name.rsplit("/", 1)[-1].startswith(f".{MANIFEST}.") and name.endswith(".tmp"):
                self.fs.rm(name)
        self._remove_empty_folders()
        if removed:
            log.debug("removed %d unreferenced files", len(removed))
        return removed

    def vacuum(self) -> tuple[int, int]:
        """Delete every file under the dataset but the manifest, its parts and the lock.

        The replaced version's parts in ``_trash/`` go too (a reader still on that version
        then fails and reads again). Returns (files, bytes) removed. Call it holding
        ``writer_lock``.
        """
        manifest = self.require_manifest()  # without one, nothing tells a part from a stray
        keep = {MANIFEST, LOCK} | {p.path for p in manifest.parts}
        count = size = 0
        for rel, nbytes in self.files_under("").items():
            if rel not in keep:
                self.fs.rm(f"{self.root}/{rel}")
                count += 1
                size += nbytes
        self._remove_empty_folders()
        return count, size

    def _remove_empty_folders(self) -> None:
        """Local folders left empty (object stores have none)."""
        if self.protocol not in ("file", "local"):
            return
        for folder, _, _ in sorted(os.walk(self.root), key=lambda w: -len(w[0])):
            if folder != self.root:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # fails on a folder that is not empty, as wanted

    def remove_parts(self, rels: list[str]) -> None:
        """Best effort, after a failed run: delete its parts, never one the manifest lists.

        A run can fail after its manifest was written (an error or Ctrl-C during the garbage
        collection): its parts are then the committed version and must stay. The table
        folders are then left holding exactly the manifest's parts (``collect_garbage``).
        """
        try:
            manifest = self.read_manifest()
        except WarehouseError:
            return  # cannot tell what is referenced: keep everything, the next commit collects
        keep = ({p.path for p in manifest.parts} | set(manifest.previous_parts)) if manifest else set()
        for rel in rels:
            if rel in keep:
                continue
            try:
                self.fs.rm(f"{self.root}/{rel}")
            except (FileNotFoundError, OSError):
                pass
        try:
            self.collect_garbage(manifest)
        except OSError as err:
            log.warning("%s: removing unlisted parts failed: %s", self.url(""), err)

    @contextlib.contextmanager
    def transaction(self):
        """One writer's new version: hold ``writer_lock``, yield a ``Transaction`` to write parts
        through and commit, then collect the garbage.

        Not committed when the block ends (an error, Ctrl-C, or no ``commit``): the parts it
        recorded are removed (never one a written manifest lists). Committed: the garbage
        collection runs, also on an error after the commit, and its failure is a warning (the
        version is committed all the same; the next commit collects again).
        """
        with self.writer_lock():
            txn = Transaction(self)
            try:
                yield txn
            finally:
                if txn.committed is None:
                    self.remove_parts(txn.written)
                else:
                    try:
                        self.collect_garbage(txn.committed)
                    except OSError as err:
                        log.warning("%s: version %d committed, but removing old parts failed: %s",
                                    self.url(""), txn.committed.version, err)

    # -------------------------------------------------------------- reading

    def read_table(self, table: str, split: str | None = None, manifest: Manifest | None = None) -> pa.Table:
        """The rows of a table that the manifest lists, in part order (tests and small tables)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .schema import schema_for

        manifest = manifest or self.require_manifest()
        rels = sorted(manifest.files(table, split), key=_part_sort_key)
        if not rels:
            return schema_for(table, manifest.id_types()).empty_table()
        tables = []
        for rel in rels:
            with self.fs.open(f"{self.root}/{rel}", "rb") as f:
                t = pq.read_table(f)
            key = partition_key(table)
            split_name = rel.split(f"/{key}=", 1)[1].split("/", 1)[0]
            tables.append(t.append_column(key, pa.array([split_name] * t.num_rows, pa.string())))
        return pa.concat_tables(tables, promote_options="default")


class Transaction:
    """The parts a writer writes and the version it commits (``Warehouse.transaction``)."""

    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse
        self.written: list[str] = []  # parts it may have written (relative paths): removed on failure
        self.committed: Manifest | None = None

    def part(self, table: str, split: str, number: int) -> str:
        """A new part's path relative to the dataset root, recorded as written."""
        rel = Warehouse.part_rel(table, split, number)
        self.written.append(rel)
        return rel

    def will_write(self, rels) -> None:
        """Record parts that tasks will write (relative paths), before they run."""
        self.written.extend(rels)

    def commit(self, parts: list[Part], replaced: set[tuple[str, str]], sources: list[dict],
               derive: Callable[[Transaction, Manifest], list[Part]] | None = None) -> Manifest:
        """``Warehouse.commit`` without the garbage collection, which the transaction's end runs.

        ``derive(txn, version)``: the derived tables' parts (``schema.DERIVED_FROM``) of the
        version these parts would make, written in this transaction and committed with them.
        """
        if derive is not None:
            parts = parts + derive(self, self.warehouse.next_manifest(parts, replaced, sources))
        self.committed = self.warehouse.commit(parts, replaced, sources, collect=False)
        return self.committed


def _local_path(url: str) -> str | None:
    """A plain local path as ``fsspec.core.url_to_fs`` makes it (absolute), None for any URL."""
    path = os.path.expanduser(url)
    local = os.sep == "/" and not ("://" in url or "::" in url or url.startswith("data:"))
    return (path if path.startswith("/") else os.path.abspath(path)) if local else None


def list_datasets(warehouse: str, storage_options: dict | None = None) -> list[str]:
    """The datasets of a warehouse: its folders that hold a manifest."""
    fs, base = importlib.import_module("fsspec").core.url_to_fs(warehouse, **(storage_options or {}))
    base = base.rstrip("/")
    try:
        entries = fs.ls(base, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        raise WarehouseError(f"{warehouse}: no warehouse here") from None
    names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]
    return sorted(n for n in names if fs.exists(f"{base}/{n}/{MANIFEST}"))


def trash_rel(version: int, rel: str) -> str:
    """Where a part of ``version`` waits, out of the table folders, once a commit replaced it."""
    return f"{TRASH}/v{version}/{rel}"


def original_rel(rel: str) -> str:
    """The table-folder path of a part in the trash (other paths unchanged)."""
    m = re.match(rf"{TRASH}/v\d+/(.+)$", rel)
    return m.group(1) if m else rel


def _part_sort_key(rel: str):
    m = _PART_RE.search(rel)
    return (rel.split("/part-")[0], int(m.group(1)) if m else -1)


def write_part(fs, path: str, batches, schema: pa.Schema, row_group_rows: int | None = None) -> int:
    """Write record batches/tables to one Parquet file; returns rows (no file when 0 rows).

    ``row_group_rows``: at most that many rows per row group (None: pyarrow's default).
    """
    import pyarrow.parquet as pq

    rows = 0
    writer = None
    f = None
    try:
        for t in batches:
            if t.num_rows == 0:
                continue
            if writer is None:
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                f = fs.open(path, "wb")
                writer = pq.ParquetWriter(f, schema, compression="zstd")
            writer.write_table(t.cast(schema) if t.schema != schema else t, row_group_size=row_group_rows)
            rows += t.num_rows
    finally:
        if writer is not None:
            writer.close()
        if f is not None:
            f.close()
    return rows

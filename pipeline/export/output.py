"""output: where an export is built, and how it replaces ``--out`` in one step.

Input: the ``--out`` the user gave, ``--overwrite``, and the warehouse read from. Output:
a fresh directory beside ``--out`` (``<out>.tmp-<random>``, on the same filesystem) that
the writers fill; when they are done a marker file (``MARKER``) is written into it and it
is renamed to ``--out``. When they fail, it is removed.

Guarantees:

- ``--out`` never mixes two exports and never holds half of one: it is either what it was
  before the export, or the whole new export.
- Nothing at ``--out`` is deleted unless ``overwrite``, and then only an earlier export
  (a directory holding ``MARKER``) or an empty directory: a directory of other files (a
  home directory, a dataset) is refused even with ``--overwrite``. The old export is
  renamed aside first, the new one renamed in, and only then the old one removed.
- ``--out`` that is a file, the warehouse itself, a directory holding the warehouse or a
  directory inside it, or the current directory (or one holding it) is refused with one
  line, before anything is selected or written.
- Object stores (an fsspec URL, ``--format parquet``): the export is written under
  ``<out>.tmp-<random>`` and moved to ``<out>`` at the end (a copy on most stores, so not
  one atomic step there); on failure that prefix is removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid

from .options import ExportError, ExportOptions

log = logging.getLogger(__name__)

# written last into every export: what --overwrite may replace
MARKER = ".cocolake-export"


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _marker_text(opts: ExportOptions) -> str:
    return json.dumps({"format": opts.format, "dataset": opts.dataset, "warehouse": opts.warehouse}) + "\n"


@contextlib.contextmanager
def staged(opts: ExportOptions):
    """Yield the directory (path or URL) to build the export in; it becomes ``opts.out`` on success."""
    overwrite = opts.overwrite
    if _is_url(opts.out):
        with _staged_remote(opts, overwrite) as build:
            yield build
        return
    target = os.path.realpath(_local(opts.out))  # a symlink to a directory: the directory is replaced
    existing = _check_local(opts.out, target, opts.warehouse, overwrite)
    parent = os.path.dirname(target)
    build = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(build)  # a new name: nothing planted there can be written through
    except OSError as err:
        raise ExportError(f"--out {opts.out}: cannot create {build}: {err.strerror or err}") from None
    try:
        yield build
        with open(os.path.join(build, MARKER), "w", encoding="utf-8") as f:
            f.write(_marker_text(opts))
        _swap_in(build, target, existing)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def _check_local(out: str, target: str, warehouse: str, overwrite: bool) -> str:
    """What is at ``target`` now: "none", "empty" or "export"; raises when it may not be replaced."""
    if not _is_url(warehouse) and os.path.exists(_local(warehouse)):  # a missing one fails with its own message
        wh = os.path.realpath(_local(warehouse))
        if target == wh:
            raise ExportError(f"--out {out}: is the warehouse; export into a directory of its own")
        if wh.startswith(target.rstrip(os.sep) + os.sep):
            raise ExportError(f"--out {out}: holds the warehouse {warehouse}; export into a directory of its own")
        if target.startswith(wh + os.sep):
            raise ExportError(f"--out {out}: is inside the warehouse {warehouse}; export into a directory "
                              "outside it")
    if not os.path.lexists(target):
        return "none"
    cwd = os.path.realpath(os.getcwd())
    if cwd == target or cwd.startswith(target.rstrip(os.sep) + os.sep):
        # renaming it would leave this process and the user's shell in a removed directory
        raise ExportError(f"--out {out}: holds the current directory; export into a directory beside or below it")
    if not os.path.isdir(target):
        raise ExportError(f"--out {out}: is a file, not a directory; choose a directory for the export")
    try:
        entries = os.listdir(target)
    except OSError as err:
        raise ExportError(f"--out {out}: cannot list it: {err.strerror or err}") from None
    if not entries:
        return "empty"
    return _replaceable(out, entries, overwrite, ": remove it yourself or choose a new directory")


def _replaceable(out: str, entries: list[str], overwrite: bool, advice: str = "") -> str:
    """``"export"`` when the entries of a non-empty ``--out`` are an earlier export that
    ``--overwrite`` replaces; else the ``ExportError`` that says why not."""
    if not overwrite:
        raise ExportError(f"--out {out}: is not empty ({len(entries)} entries); give --overwrite to replace "
                          "it whole, or choose a new directory")
    if MARKER not in entries:
        raise ExportError(f"--out {out}: holds files that are not a cocolake export (no {MARKER}); "
                          f"--overwrite only replaces an earlier export or an empty directory{advice}")
    return "export"


def _swap_in(build: str, target: str, existing: str) -> None:
    """Rename ``build`` to ``target``; an earlier export there is renamed aside, then removed."""
    if existing != "export":
        # rename(2) replaces an empty directory; one that got files meanwhile makes it fail
        try:
            os.replace(build, target)
        except OSError as err:
            raise ExportError(f"--out {target}: cannot rename the finished export into place: "
                              f"{err.strerror or err} (something was written there meanwhile?)") from None
        return
    old = f"{target}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(build, target)
    except OSError:
        os.replace(old, target)  # put the earlier export back
        raise
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(old):
        log.warning("the replaced export is left at %s: it could not be removed", old)


# ---------------------------------------------------------------------------- object stores


@contextlib.contextmanager
def _staged_remote(opts: ExportOptions, overwrite: bool):
    if opts.format != "parquet":
        raise ExportError(f"--out {opts.out}: {opts.format} exports are written to a local directory; "
                          "export there and upload it, or use --format parquet")
    out, warehouse = opts.out.rstrip("/"), opts.warehouse.rstrip("/")
    if out == warehouse or warehouse.startswith(out + "/") or out.startswith(warehouse + "/"):
        raise ExportError(f"--out {opts.out}: is, holds or is inside the warehouse {opts.warehouse}; export "
                          "into a prefix of its own")
    import fsspec  # here: a local export needs none of it, and its import is slow

    fs, path = fsspec.core.url_to_fs(opts.out, **(opts.out_storage_options or {}))
    path = path.rstrip("/")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    existing = _remote_state(fs, path, opts.out, overwrite)
    build = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield f"{protocol}://{build}"
        fs.pipe_file(f"{build}/{MARKER}", _marker_text(opts).encode())
        if existing == "export":
            fs.rm(path, recursive=True)
        fs.mv(build, path, recursive=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if fs.exists(build):
                fs.rm(build, recursive=True)
        raise


def _remote_state(fs, path: str, out: str, overwrite: bool) -> str:
    if not fs.exists(path):
        return "none"
    if not fs.isdir(path):
        raise ExportError(f"--out {out}: is a file, not a directory; choose a directory for the export")
    entries = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    if not entries:
        return "none"
    return _replaceable(out, entries, overwrite)

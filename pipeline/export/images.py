"""images: the subset's image files, copied, linked or fetched into the export directory.

Input: ``ImageJob``s (one per output file: source split, output split, ``file_name``,
``coco_url``), an image root and a mode. Output: files under the destination directory,
or the bytes themselves (``read_all``, for Parquet's ``image_bytes``).

Where an image comes from: with an image root that is a local directory or a ``.zip``,
``<root>/<split>/<file_name>``, else ``<root>/<file_name>`` (official image zips hold
``val2017/<file_name>``); with an fsspec URL prefix such as ``http://host/coco/``,
``<root>/<split>/<file_name>``. A root containing ``{split}`` is formatted with the image's
split first (``/data/{split}.zip``; a URL ``http://host/{split}/`` is then followed by
``<file_name>`` only). Without a root, each image's ``coco_url``.

Guarantees: a ``file_name`` that could land outside the destination (absolute, ``..``, a
drive letter, a NUL, empty) is rejected before anything is written; transfers run in a
thread pool and report progress; each file is written under a temporary name and renamed,
so a partial download never looks complete; a symlink already at a destination or its
temporary name is replaced, never written through; failures are collected and reported
together (and, the export being built beside ``--out``, nothing of it is kept).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import os
import re
import shutil

import fsspec

from ..ingest.download import Transient, with_retries
from .options import ExportError, Progress

log = logging.getLogger(__name__)

RETRIES = 3
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclasses.dataclass(frozen=True)
class ImageJob:
    image_id: object
    split: str  # where the image comes from
    out_split: str  # where it goes
    file_name: str
    coco_url: str | None = None


# ---------------------------------------------------------------------------- paths


def safe_relpath(file_name, image_id=None) -> str:
    """``file_name`` as a relative path that stays inside any directory it is joined to."""
    who = f"image id={image_id!r}: " if image_id is not None else ""
    if not isinstance(file_name, str) or not file_name.strip():
        raise ExportError(f"{who}file_name {file_name!r} is empty; cannot name the image file")
    if "\x00" in file_name:
        raise ExportError(f"{who}file_name {file_name!r} contains a NUL character")
    norm = file_name.replace("\\", "/")
    if norm.startswith("/"):
        raise ExportError(f"{who}file_name {file_name!r} is an absolute path; it would be written outside "
                          "the export directory")
    if _DRIVE.match(norm):
        raise ExportError(f"{who}file_name {file_name!r} starts with a drive letter; it would be written "
                          "outside the export directory")
    parts = norm.split("/")
    if ".." in parts:
        raise ExportError(f"{who}file_name {file_name!r} contains '..'; it would be written outside the "
                          "export directory")
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        raise ExportError(f"{who}file_name {file_name!r} names no file")
    return "/".join(parts)


def destination(base: str, job: ImageJob) -> str:
    """``<base>/<out_split>/<file_name>``, checked to stay inside ``base``."""
    rel = safe_relpath(job.file_name, job.image_id)
    dest = os.path.join(base, job.out_split, *rel.split("/"))
    root = os.path.realpath(base)
    parent = os.path.realpath(os.path.dirname(dest))
    if parent != root and not parent.startswith(root + os.sep):
        raise ExportError(f"image id={job.image_id!r}: {job.file_name!r} resolves to {parent}, outside {base}")
    return dest


# ---------------------------------------------------------------------------- sources


def _is_url(path: str) -> bool:
    return "://" in path


@functools.lru_cache(maxsize=16)
def _zip_fs(root: str):
    return fsspec.filesystem("zip", fo=root)


def locate(job: ImageJob, image_root: str | None) -> tuple[object, str]:
    """(filesystem, path) of the image's source file."""
    rel = safe_relpath(job.file_name, job.image_id)
    if image_root is None:
        if not job.coco_url:
            raise ExportError(f"image id={job.image_id!r} ({job.file_name}): no coco_url and no image root; "
                              "give --image-root")
        fs, path = fsspec.core.url_to_fs(job.coco_url)
        return fs, path
    templated = "{split}" in image_root
    root = image_root.replace("{split}", job.split)
    # official image zips hold "<split>/<file_name>", hand-made ones often just "<file_name>"
    candidates = [f"{job.split}/{rel}", rel]
    if root.lower().endswith(".zip"):
        fs = _zip_fs(root)
        for c in candidates:
            if fs.exists(c):
                return fs, c
        raise ExportError(f"image id={job.image_id!r}: none of {', '.join(candidates)} is in {root}")
    if _is_url(root):
        fs, base = fsspec.core.url_to_fs(root)
        if fs.protocol in ("file", "local") or "file" in fs.protocol:
            root = base
        else:
            url = root.rstrip("/") + "/" + (rel if templated else f"{job.split}/{rel}")
            return fsspec.core.url_to_fs(url)
    fs = fsspec.filesystem("file")
    for c in candidates:
        path = os.path.join(root, *c.split("/"))
        if os.path.isfile(path):
            return fs, path
    raise ExportError(f"image id={job.image_id!r}: not found as "
                      f"{' or '.join(os.path.join(root, *c.split('/')) for c in candidates)}")


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _with_retries(fn, what: str):
    """``fn()``, tried up to RETRIES times: a missing file or an export error fails at once."""

    def attempt(_n):
        try:
            return fn()
        except (FileNotFoundError, ExportError):
            raise
        except Exception as err:  # network errors come as aiohttp / OSError / fsspec types
            raise Transient(f"{type(err).__name__}: {err}") from None

    return with_retries(attempt, retries=RETRIES - 1, delay=lambda n: 0.2 * (n + 1),
                        give_up=lambda err, _n: ExportError(f"{what}: {err}"))


def read_bytes(job: ImageJob, image_root: str | None) -> bytes:
    fs, path = locate(job, image_root)

    def fetch():
        data = fs.cat_file(path)
        _check_size(fs, path, len(data))
        return data

    return _with_retries(fetch, _describe(fs, path))


def _describe(fs, path: str) -> str:
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _check_size(fs, path: str, got: int) -> None:
    """A transfer cut short is an error (and retried), not a truncated image."""
    if _is_local(fs):
        return
    try:
        want = fs.size(path)
    except Exception:  # a server that does not say the size: nothing to compare
        return
    if want is not None and want != got:
        raise OSError(f"received {got} of {want} bytes")


def transfer(job: ImageJob, dest: str, image_root: str | None, mode: str) -> None:
    """Put one image at ``dest`` (what is there, a symlink included, is replaced)."""
    fs, path = locate(job, image_root)
    what = _describe(fs, path)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.part"
    if os.path.lexists(tmp):  # left by an interrupted run; were it a symlink, writing would follow it
        os.remove(tmp)
    if mode == "link" and _is_local(fs):
        src = os.path.abspath(path)
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or links not allowed: a symlink does
            os.symlink(src, tmp)
        os.replace(tmp, dest)
        return

    def fetch():
        if _is_local(fs):
            shutil.copyfile(path, tmp)
        else:
            data = fs.cat_file(path)
            _check_size(fs, path, len(data))
            with open(tmp, "wb") as f:
                f.write(data)
        os.replace(tmp, dest)

    try:
        _with_retries(fetch, what)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------- in parallel


def _pool(fn, jobs: list, threads: int, progress: Progress | None, phase: str = "images"):
    """Run ``fn(k)`` for every job index k; returns results in job order; failures raised together."""
    results: list = [None] * len(jobs)
    failures: list[tuple[ImageJob, Exception]] = []
    done = 0
    if progress:
        progress(phase, 0, len(jobs))
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        futures = {pool.submit(fn, k): k for k in range(len(jobs))}
        for fut in concurrent.futures.as_completed(futures):
            k = futures[fut]
            try:
                results[k] = fut.result()
            except Exception as err:
                failures.append((jobs[k], err))
            done += 1
            if progress:
                progress(phase, done, len(jobs))
    if failures:
        job, err = failures[0]
        first = str(err) if str(err).startswith("image id=") else f"image id={job.image_id!r}: {err}"
        raise ExportError(
            f"{len(failures)} of {len(jobs)} images could not be written; first: {job.file_name}: {first}; "
            "nothing was exported"
        )
    return results


def copy_all(jobs: list[ImageJob], base: str, *, image_root: str | None, mode: str = "copy",
             threads: int = 8, progress: Progress | None = None) -> int:
    """Copy (or link) every job's image to ``<base>/<out_split>/<file_name>``; how many."""
    targets = [destination(base, job) for job in jobs]  # every name checked before any transfer
    _pool(lambda k: transfer(jobs[k], targets[k], image_root, mode), jobs, threads, progress)
    return len(jobs)


def read_all(jobs: list[ImageJob], *, image_root: str | None, threads: int = 8,
             progress: Progress | None = None) -> list[bytes]:
    """The bytes of every job's image, in job order."""
    for job in jobs:
        safe_relpath(job.file_name, job.image_id)
    return _pool(lambda k: read_bytes(jobs[k], image_root), jobs, threads, progress)

"""download: remote files into the verified cache, checksums, and the one retry loop.

Input: a URL (http(s) or any fsspec protocol), the cache directory and the expected md5 /
sha256. Output: the local path of the complete, verified file.

Guarantees:
- ``download`` never leaves a partial or unverified file in the cache, retries connection
  errors and 5xx responses with backoff (resuming with a range request when it can), and
  fails at once on other HTTP errors. A resumed file that fails verification is fetched
  again whole once (the file may have changed between the attempts). Temporary files that
  a killed process left behind are removed once they are an hour old.
- ``with_retries`` is the retry loop of every remote read (probes, byte ranges, downloads,
  exported images): an attempt raises ``Transient`` for a failure worth another try.
- Every failure is a ``SourceError`` naming the URL.

Imports the shared core only (errors).
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path, PurePosixPath
from typing import Callable, TypeVar
from urllib.parse import unquote, urlsplit

from fsspec.core import url_to_fs

from ..errors import SourceError

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
_TIMEOUT = 60  # seconds without data before a download attempt counts as failed
_STALE_PART = 3600  # seconds without a write after which a download's temporary file is abandoned

T = TypeVar("T")


def basename(url: str) -> str:
    """The last path segment of a URL or path, percent-decoded."""
    return PurePosixPath(unquote(urlsplit(url).path) if "://" in url else url).name


def is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


# ------------------------------------------------------------------------------ retries


class Transient(Exception):
    """A failure worth another attempt (a cut connection, a 5xx answer); its text says what happened."""


def with_retries(attempt: Callable[[int], T], *, retries: int, delay: Callable[[int], float],
                 give_up: Callable[[Transient, int], Exception],
                 warn: Callable[[Transient, float, int], None] | None = None) -> T:
    """``attempt(n)`` for n = 0, 1, ... until it does not raise ``Transient``, waiting
    ``delay(n)`` seconds in between (``warn(err, seconds, n + 1)`` says so first); after
    ``retries`` retries, ``give_up(err, attempts)`` is raised. Anything else ``attempt``
    raises goes through at once."""
    for n in range(retries + 1):
        try:
            return attempt(n)
        except Transient as err:
            if n == retries:
                raise give_up(err, n + 1) from None
            wait = delay(n)
            if warn is not None:
                warn(err, wait, n + 1)
            time.sleep(wait)
    raise AssertionError("unreachable")


def retry_source(url: str, retries: int, backoff: float, attempt: Callable[[int], T]) -> T:
    """``with_retries`` for a source: backoff * 2**n apart, logged, a ``SourceError`` at the end."""

    def warn(err, wait, n):
        log.warning("%s: %s; retrying in %.1f s (%d/%d)", url, err, wait, n, retries)

    return with_retries(attempt, retries=retries, delay=lambda n: backoff * 2**n, warn=warn,
                        give_up=lambda err, n: SourceError(url, f"{err}; gave up after {n} attempts"))


# ------------------------------------------------------------------------------ download


def download(url: str, *, cache_dir: str, md5: str | None = None, sha256: str | None = None, retries: int = 3,
             backoff: float = 1.0, storage_options: dict | None = None) -> str:
    """Local path of ``url`` in the cache, downloaded and verified if it is not there yet.

    The cache name depends on the URL and the expected checksums, and a file only gets it
    after it is complete and verified (written under a temporary name, then renamed).
    ``retries`` more attempts follow a connection error, a cut transfer or a 5xx response,
    ``backoff`` seconds apart, doubling.
    """
    sums = {k: v.lower() for k, v in (("md5", md5), ("sha256", sha256)) if v}
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256("\n".join([url, md5 or "", sha256 or ""]).encode()).hexdigest()[:16]
    final = cache / f"{key}-{basename(url) or 'download'}"
    if final.is_file():
        log.debug("%s: using cached %s", url, final)
        return str(final)
    _remove_stale_parts(cache, final.name)
    tmp = cache / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        log.info("downloading %s", url)
        resumed = _fetch(url, tmp, retries, backoff, storage_options or {})
        try:
            verify(url, str(tmp), sums, keep=False)
        except SourceError as err:
            if not resumed:
                raise
            log.warning("%s: %s after resuming; downloading it again whole", url, err.problem.split(";")[0])
            tmp.unlink()
            _fetch(url, tmp, retries, backoff, storage_options or {})
            verify(url, str(tmp), sums, keep=False)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("%s: %d bytes in %s", url, final.stat().st_size, final)
    return str(final)


def _fetch(url: str, tmp: Path, retries: int, backoff: float, so: dict) -> bool:
    """Write ``url`` to ``tmp``, retrying transient failures; True if a transfer was resumed."""

    def attempt(n: int) -> bool:
        if is_http(url):
            return _http_get(url, tmp, resume=n > 0)
        _fsspec_get(url, tmp, so)
        return False

    return retry_source(url, retries, backoff, attempt)


def _remove_stale_parts(cache: Path, name: str) -> None:
    """Temporary files of this download that no process has written to for an hour.

    A download writes its temporary file at least once a minute (``_TIMEOUT``) while it
    runs, and removes it when it fails; one that is this old was left by a killed process.
    """
    cutoff = time.time() - _STALE_PART
    for part in cache.glob(f".{glob.escape(name)}.*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                log.info("%s: removed a partial download left behind", part)
        except FileNotFoundError:  # removed by another process meanwhile
            pass


def _http_get(url: str, tmp: Path, resume: bool) -> bool:
    """One attempt; True when it appended to what an earlier attempt had written."""
    have = tmp.stat().st_size if resume and tmp.exists() else 0
    headers = {"User-Agent": "cocolake", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT)
    except urllib.error.HTTPError as err:
        if err.code in (408, 425, 429) or err.code >= 500:
            raise Transient(f"HTTP {err.code} {err.reason}") from None
        hint = "; check the URL" if err.code in (403, 404, 410) else ""
        raise SourceError(url, f"HTTP {err.code} {err.reason}{hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise Transient(f"cannot connect: {getattr(err, 'reason', err)}") from None
    with resp:
        if resp.status != 206:
            have = 0  # the server sent the whole file
        length = resp.headers.get("Content-Length")
        got = 0
        try:
            with open(tmp, "ab" if have else "wb") as f:
                while chunk := resp.read(_BLOCK):
                    f.write(chunk)
                    got += len(chunk)
        except (OSError, http.client.HTTPException) as err:
            raise Transient(f"connection lost after {have + got} bytes: {err}") from None
    if length is not None and got != int(length):
        raise Transient(f"connection closed after {have + got} of {have + int(length)} bytes")
    return bool(have)


def _fsspec_get(url: str, tmp: Path, so: dict) -> None:
    fs, path = url_to_fs(url, **so)
    try:
        with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(_BLOCK):
                dst.write(chunk)
    except FileNotFoundError:
        raise SourceError(url, "no such file") from None
    except Exception as err:  # noqa: BLE001 - object-store clients raise their own transport errors
        raise Transient(f"transfer failed: {err}") from None


def verify(url: str, path: str, sums: dict, keep: bool) -> None:
    """Check ``path`` against ``{"md5": ..., "sha256": ...}``; ``keep``: the file is the user's own."""
    if not sums:
        return
    hashes = {k: hashlib.new(k) for k in sums}
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            size += len(chunk)
            for h in hashes.values():
                h.update(chunk)
    for kind, expected in sums.items():
        got = hashes[kind].hexdigest()
        if got != expected.lower():
            what = "check the file or the checksum in the config" if keep else \
                "the download was discarded; check the checksum in the config"
            raise SourceError(url, f"{kind} mismatch: expected {expected}, got {got} ({size} bytes); {what}")

"""sources: turn configured URLs into concrete JSON documents, read through fsspec.

Input: URLs or paths: a ``.json`` / ``.json.gz`` / ``.zip`` file, a directory of them (one
level of sub-directories included), ``zip://member::archive-url``, any fsspec protocol
(``http(s)://``, ``s3://``, ...). Relative paths are relative to the working directory.
Output: ``SourceFile`` records, one per JSON document, and two ways to read one:
``open_document`` (sequential) and ``read_range`` (bytes ``[start, end)``); ``read_whole``
makes a document of a file's bytes read at once (a per-image set's, at most a bound).

What a document is: the decompressed bytes of the file or zip member, *without* a leading
UTF-8 byte-order mark. ``bom`` says how many bytes were skipped (0 or 3); offsets, ``size``
and everything ``read_range`` / ``open_document`` return exclude it, so a splitter never
sees it.

Guarantees:
- The content decides, not the name: gzip (``1f 8b``) or zip (``PK\\x03\\x04``) data under a
  ``.json`` name is decompressed / expanded as such.
- Zip members are read in place, never extracted. A member stored uncompressed is
  ``seekable`` (its bytes are read straight out of the archive); a deflated one is streamed.
  Member names that are absolute or contain ``..`` are refused.
- http(s) with a configured checksum: downloaded once into the cache (``download``),
  verified, then read locally. Without one: read remotely, with range requests when the
  server supports them; probes and byte ranges are retried through ``download.with_retries``.
- Every failure is a ``SourceError`` (``BadFileError`` for corrupt data) naming the URL.

Imports the shared core (errors) and ``download``.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import BinaryIO

import fsspec
from fsspec.core import url_to_fs

from ..errors import BadFileError, SourceError
from .download import Transient, basename, download, is_http, retry_source, verify, with_retries

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with members / an empty one
_SUFFIXES = (".json", ".json.gz", ".zip")
_BLOCK = 1 << 20
_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile)


@dataclass(frozen=True)
class SourceFile:
    """One JSON document: where it is and how its bytes can be read."""

    url: str  # fsspec URL: "/abs/x.json", "zip://annotations/x.json::/abs/a.zip", "http://..."
    name: str  # base name without .gz: "instances_val2017.json"
    size: int | None  # bytes of the document (decompressed, BOM excluded) when known
    compression: str | None  # None or "gzip"
    seekable: bool  # byte ranges can be read directly, without reading what comes before
    storage_options: dict = field(default_factory=dict, hash=False)  # fsspec options (credentials, endpoint)
    bom: int = 0  # bytes of UTF-8 BOM skipped at the start of the decompressed data
    split: str | None = None  # given by the config for this source; None: split_from_name(name)
    data_offset: int | None = None  # uncompressed zip member: where its data starts in the archive


# ------------------------------------------------------------------------------ names


_SPLIT = re.compile(r"^.+_(?P<split>[A-Za-z][A-Za-z-]*\d{4})\.json(?:\.gz)?$")


def split_from_name(name: str) -> str | None:
    """``instances_val2017.json`` → ``val2017``; ``image_info_test-dev2017.json`` → ``test-dev2017``."""
    m = _SPLIT.match(name.rsplit("/", 1)[-1])
    return m.group("split") if m else None


def doc_name(name: str) -> str:
    """A file's document name: its name without a trailing .gz."""
    return name[:-3] if name.lower().endswith(".gz") else name


def _unsafe(member: str) -> bool:
    parts = member.replace("\\", "/").split("/")
    return member.startswith(("/", "\\")) or ".." in parts or bool(re.match(r"^[A-Za-z]:", member))


# ------------------------------------------------------------------------------ resolve


def resolve(
    urls: list[str],
    *,
    cache_dir: str,
    checksums: dict[str, dict] | None = None,
    members: dict[str, list[str] | None] | None = None,
    storage_options: dict | None = None,
) -> list[SourceFile]:
    """Expand URLs into documents, in the order given (directory listings sorted).

    ``checksums`` and ``members`` are keyed by URL: ``{url: {"md5": ..., "sha256": ...}}``
    (None values ignored) and ``{url: ["annotations/instances_val2017.json", ...]}``.
    """
    out: list[SourceFile] = []
    for url in urls:
        sums = {k: v for k, v in ((checksums or {}).get(url) or {}).items() if v}
        out += _resolve_one(url, cache_dir, sums, (members or {}).get(url), dict(storage_options or {}))
    return out


def resolve_sources(sources, *, cache_dir: str) -> list[SourceFile]:
    """``resolve`` for ``config.Source`` records: their checksums, members, options and split."""
    out: list[SourceFile] = []
    for s in sources:
        found = resolve([s.url], cache_dir=cache_dir, checksums={s.url: {"md5": s.md5, "sha256": s.sha256}},
                        members={s.url: s.members}, storage_options=s.storage_options)
        out += [replace(sf, split=s.split) for sf in found] if s.split else found
    return out


def _resolve_one(url: str, cache_dir: str, sums: dict, wanted, so: dict) -> list[SourceFile]:
    if url.startswith("zip://"):
        member, _, archive = url[len("zip://"):].partition("::")
        if not member or not archive:
            raise SourceError(url, "expected zip://<member>::<archive URL>")
        archive, so = _localise(archive, cache_dir, sums, so)
        return _zip_members(archive, [member], so)
    name = basename(url)
    url, so = _localise(url, cache_dir, sums, so)
    if is_http(url):
        if not name:
            raise SourceError(url, "directories cannot be listed over HTTP; give the URL of each file")
        return _resolve_file(url, name, wanted, so)
    fs, path = _fs(url, so)
    if fs.isdir(path):
        found = [p for p in fs.find(path, maxdepth=2)
                 if p.lower().endswith(_SUFFIXES) and not any(s.startswith(".") for s in p[len(path):].split("/"))]
        if not found:
            log.warning("%s: no *.json, *.json.gz or *.zip files in this directory", url)
        return [sf for p in sorted(found) for sf in _resolve_file(_url_of(fs, p), basename(p), wanted, so)]
    if not fs.exists(path):
        if any(c in url for c in "*?["):
            hits = sorted(fs.glob(path))
            if hits:
                return [sf for p in hits for sf in _resolve_file(_url_of(fs, p), basename(p), wanted, so)]
        raise SourceError(url, "no such file")
    return _resolve_file(url, name, wanted, so)


def _localise(url: str, cache_dir: str, sums: dict, so: dict) -> tuple[str, dict]:
    """Absolute local paths; remote files with a checksum go through the verified cache."""
    protocol = fsspec.utils.get_protocol(url)
    if protocol in ("file", "local"):
        url = os.path.abspath(url[len("file://"):] if url.startswith("file://") else url)
        if sums and os.path.isdir(url):
            raise SourceError(url, "md5/sha256 apply to a file, but this is a directory")
        if sums and os.path.isfile(url):
            verify(url, url, sums, keep=True)
        return url, so
    if sums:
        return download(url, cache_dir=cache_dir, storage_options=so, **sums), {}
    return url, so


def _fs(url: str, so: dict):
    return url_to_fs(url, **so)


def _url_of(fs, path: str) -> str:
    """A listed path as a URL: plain for local files, with the protocol otherwise."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return path if "file" in protocols else fs.unstrip_protocol(path)


def _resolve_file(url: str, name: str, wanted, so: dict) -> list[SourceFile]:
    head, size, seekable = _probe(url, so)
    if head.startswith(_ZIP_MAGICS):
        return _zip_members(url, wanted, so)
    if wanted:
        raise SourceError(url, f"members {wanted} were given, but this is not a zip archive")
    if head.startswith(_GZIP_MAGIC):
        sf = SourceFile(url, doc_name(name), None, "gzip", False, so)
        return [replace(sf, bom=_stream_bom(sf))]
    bom = len(BOM) if head.startswith(BOM) else 0
    return [SourceFile(url, doc_name(name), None if size is None else size - bom, None, seekable, so, bom=bom)]


def _probe(url: str, so: dict, retries: int = 2) -> tuple[bytes, int | None, bool]:
    """First bytes, size, and whether byte ranges can be read directly (5xx answers retried)."""
    return retry_source(url, retries, 0.5, lambda attempt: _probe_once(url, so))


def _probe_once(url: str, so: dict) -> tuple[bytes, int | None, bool]:
    fs, path = _fs(url, so)
    try:
        if not is_http(url):
            return fs.cat_file(path, start=0, end=4), fs.size(path), True
        with fs.open(path, "rb", cache_type="none") as f:
            head = f.read(4)
            size = getattr(f, "size", None)
            if size is None:  # streamed: the server gave no length
                return head, None, False
            try:
                f.seek(1)
                f.read(1)
            except ValueError:  # fsspec: "The HTTP server doesn't appear to support range requests"
                log.info("%s: the server ignores range requests; reading it sequentially", url)
                return head, size, False
            return head, size, True
    except FileNotFoundError as err:
        problem = _http_problem(url, err)
        if (getattr(err.__cause__ or err.__context__, "status", None) or 0) >= 500:  # the server failed: again
            raise Transient(problem.problem) from None
        raise problem from None
    except OSError as err:
        raise SourceError(url, f"cannot read: {err}") from None


def _http_problem(url: str, err: BaseException) -> SourceError:
    cause = err.__cause__ or err.__context__
    status = getattr(cause, "status", None)
    if status and status != 404:
        return SourceError(url, f"HTTP {status} {getattr(cause, 'message', '')}".rstrip())
    return SourceError(url, "no such file" + (" (HTTP 404)" if is_http(url) else ""))


def _zip_members(archive: str, wanted, so: dict) -> list[SourceFile]:
    try:
        with fsspec.open(archive, "rb", **so) as fo:
            zf = zipfile.ZipFile(fo)
            infos = {i.filename: i for i in zf.infolist()}
            names = _select_members(archive, infos, wanted)
            out = []
            for m in names:
                info = infos[m]
                if info.flag_bits & 0x1:
                    raise SourceError(f"zip://{m}::{archive}", "encrypted zip members are not supported")
                url = f"zip://{m}::{archive}"
                with zf.open(info) as member:
                    head = member.read(4)
                if head.startswith(_ZIP_MAGICS):
                    raise SourceError(url, "a zip inside a zip is not supported; extract the inner archive")
                if head.startswith(_GZIP_MAGIC):
                    sf = SourceFile(url, doc_name(basename(m)), None, "gzip", False, so)
                    out.append(replace(sf, bom=_stream_bom(sf)))
                    continue
                bom = len(BOM) if head.startswith(BOM) else 0
                offset = None
                if info.compress_type == zipfile.ZIP_STORED:
                    fo.seek(info.header_offset)
                    header = fo.read(30)
                    if header[:4] != b"PK\x03\x04":
                        raise BadFileError(url, "corrupt zip: no local header where the directory says")
                    name_len, extra_len = struct.unpack("<HH", header[26:30])
                    offset = info.header_offset + 30 + name_len + extra_len
                out.append(SourceFile(url, doc_name(basename(m)), info.file_size - bom, None, offset is not None,
                                      so, bom=bom, data_offset=offset))
            return out
    except FileNotFoundError as err:
        raise _http_problem(archive, err) from None
    except zipfile.BadZipFile as err:
        raise BadFileError(archive, f"not a readable zip archive: {err}") from None
    except ValueError as err:
        if "range" in str(err):
            raise SourceError(archive, "the server does not support range requests, which reading a remote zip "
                              "needs; configure its md5 or sha256 so that it is downloaded first") from None
        raise


def _select_members(archive: str, infos: dict, wanted) -> list[str]:
    if wanted is None:
        names = [n for n in sorted(infos) if n.lower().endswith((".json", ".json.gz")) and not n.endswith("/")
                 and not n.startswith("__MACOSX/") and not PurePosixPath(n).name.startswith(".")]
    else:
        names = []
        for w in wanted:
            if w in infos:
                names.append(w)
                continue
            by_base = [n for n in infos if PurePosixPath(n).name == w]
            if len(by_base) != 1:
                shown = ", ".join(sorted(infos)[:10]) + (", ..." if len(infos) > 10 else "")
                raise SourceError(archive, f"no member {w!r} in the archive; members: {shown}")
            names.append(by_base[0])
    for n in names:
        if _unsafe(n):
            raise SourceError(archive, f"member {n!r}: absolute path or '..' in the name; refusing it")
    return names


def _stream_bom(sf: SourceFile) -> int:
    with _open_raw(sf) as f:
        return len(BOM) if f.read(len(BOM)) == BOM else 0


# ------------------------------------------------------------------------------ reading


class _Stream(io.RawIOBase):
    """A read-only stream that closes what it was built on and reports corrupt data."""

    def __init__(self, inner, owners: list, url: str):
        self._inner, self._owners, self._url = inner, owners, url

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            if hasattr(self._inner, "readinto"):  # no copy of each block (local files, gzip, HTTP)
                return self._inner.readinto(b) or 0
            data = self._inner.read(len(b))
        except _CORRUPT as err:
            raise BadFileError(self._url, f"corrupt or truncated compressed data: {err}") from None
        except Exception as err:  # noqa: BLE001 - a cut connection comes as the fsspec backend's own error
            raise SourceError(self._url, "the connection was lost or the server failed while reading: "
                              f"{type(err).__name__}: {err}") from None
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            for f in [self._inner, *reversed(self._owners)]:
                f.close()
        super().close()


def _open_raw(sf: SourceFile) -> BinaryIO:
    """The decompressed bytes, BOM included, as a buffered stream (read(n) returns n until EOF)."""
    owners: list = []
    try:
        if sf.url.startswith("zip://"):
            member, _, archive = sf.url[len("zip://"):].partition("::")
            fo = fsspec.open(archive, "rb", **sf.storage_options).open()
            owners.append(fo)
            zf = zipfile.ZipFile(fo)
            owners.append(zf)
            f = zf.open(member)
        else:
            fs, path = _fs(sf.url, sf.storage_options)
            f = fs.open(path, "rb", **({"block_size": 0} if is_http(sf.url) else {}))
        if sf.compression == "gzip":
            owners.append(f)
            f = _gunzipped(f)
        elif sf.compression is not None:
            raise SourceError(sf.url, f"unknown compression {sf.compression!r}")
    except FileNotFoundError as err:
        for o in reversed(owners):
            o.close()
        raise _http_problem(sf.url, err) from None
    except (zipfile.BadZipFile, KeyError) as err:
        for o in reversed(owners):
            o.close()
        raise BadFileError(sf.url, f"cannot open the zip member: {err}") from None
    return io.BufferedReader(_Stream(f, owners, sf.url), buffer_size=_BLOCK)


def _gunzipped(f) -> gzip.GzipFile:
    """The one gzip reader: the decompressed bytes of the gzip stream ``f``."""
    return gzip.GzipFile(fileobj=f, mode="rb")


def read_whole(data: bytes, url: str, max_bytes: int) -> bytes:
    """A file read whole (a per-image set's document) as a document: gzip data decompressed,
    a BOM skipped. It may decompress to at most ``max_bytes``: a few MB of gzip can hold
    gigabytes of JSON, which are refused before they are held in memory."""
    if data.startswith(_GZIP_MAGIC):
        parts, size = [], 0
        with _Stream(_gunzipped(io.BytesIO(data)), [], url) as f:
            while piece := f.read(_BLOCK):
                size += len(piece)
                if size > max_bytes:
                    raise BadFileError(url, f"decompresses to more than {max_bytes >> 20} MB; a per-image "
                                       "document that large is not supported")
                parts.append(piece)
        data = b"".join(parts)
    return data[len(BOM):] if data.startswith(BOM) else data


def open_document(sf: SourceFile) -> BinaryIO:
    """Sequential reader of the document (decompressed, BOM skipped). Close it after use."""
    f = _open_raw(sf)
    if sf.bom:
        f.read(sf.bom)
    return f


def read_range(sf: SourceFile, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the document; shorter when it ends first (like a slice)."""
    if start < 0 or end < start:
        raise ValueError(f"invalid range [{start}, {end})")
    if sf.size is not None:
        end = min(end, sf.size)
        start = min(start, end)
    if start == end:
        return b""
    if sf.seekable and sf.compression is None:
        if sf.data_offset is not None:
            base = sf.data_offset + sf.bom
            return _cat(sf.url.split("::", 1)[1], base + start, base + end, sf.storage_options)
        if not sf.url.startswith("zip://"):
            return _cat(sf.url, sf.bom + start, sf.bom + end, sf.storage_options)
    with open_document(sf) as f:  # streamed: read and discard up to start, one block at a time
        left = start
        while left > 0:
            got = len(f.read(min(left, _BLOCK)))
            if not got:
                return b""
            left -= got
        return f.read(end - start)


def _cat(url: str, start: int, end: int, so: dict, retries: int = 2) -> bytes:
    fs, path = _fs(url, so)

    def attempt(n: int) -> bytes:
        try:
            return fs.cat_file(path, start=start, end=end)
        except FileNotFoundError as err:
            raise _http_problem(url, err) from None
        except (ValueError, TypeError) as err:
            raise SourceError(url, f"reading bytes {start}-{end} failed: {err}") from None
        except Exception as err:  # noqa: BLE001 - fsspec backends raise their own transport errors
            raise Transient(str(err)) from None

    def warn(err, _wait, _n):
        log.warning("%s: reading bytes %d-%d failed (%s); retrying", url, start, end, err)

    return with_retries(attempt, retries=retries, delay=lambda n: 0.5 * (n + 1), warn=warn,
                        give_up=lambda err, _n: SourceError(url, f"reading bytes {start}-{end} failed: {err}"))

"""pipeline/ingest/download.py: verified downloads over real HTTP, the cache, the retry loop."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import time
import zipfile

import pytest

from pipeline.errors import SourceError
from pipeline.ingest import download, sources
from tests.ingest.test_sources import DOC, _files_under, _read_all, _zip


# ------------------------------------------------------------------------------ the retry loop


def test_with_retries_retries_transient_failures_then_gives_up_with_the_count():
    calls, waits = [], []

    def attempt(n):
        calls.append(n)
        raise download.Transient(f"failure {n}")

    with pytest.raises(SourceError, match=r"^u: failure 2 after 3$"):
        download.with_retries(attempt, retries=2, delay=lambda n: 0.0,
                              warn=lambda err, wait, n: waits.append((str(err), n)),
                              give_up=lambda err, n: SourceError("u", f"{err} after {n}"))
    assert calls == [0, 1, 2] and waits == [("failure 0", 1), ("failure 1", 2)]


def test_with_retries_lets_other_errors_through_at_once():
    calls = []

    def attempt(n):
        calls.append(n)
        if n == 0:
            raise download.Transient("cut")
        raise SourceError("u", "no such file")

    with pytest.raises(SourceError, match="no such file"):
        download.with_retries(attempt, retries=5, delay=lambda n: 0.0,
                              give_up=lambda err, n: SourceError("u", "gave up"))
    assert calls == [0, 1]
    assert download.with_retries(lambda n: n, retries=0, delay=lambda n: 0.0,
                                 give_up=lambda err, n: SourceError("u", "gave up")) == 0


# ------------------------------------------------------------------------------ http: download


@pytest.fixture
def archive_on_server(http_server):
    data = io.BytesIO()
    _zip(data, {"annotations/instances_val2017.json": DOC}, zipfile.ZIP_DEFLATED)
    payload = data.getvalue()
    (http_server.root / "ann.zip").write_bytes(payload)
    return http_server, payload, hashlib.sha256(payload).hexdigest(), hashlib.md5(payload).hexdigest()


def test_download_verifies_and_reuses_the_cache(archive_on_server, tmp_path):
    server, payload, sha, md5 = archive_on_server
    url = server.url("ann.zip")
    path = download.download(url, cache_dir=str(tmp_path), sha256=sha, md5=md5)
    assert open(path, "rb").read() == payload and path.endswith("-ann.zip")
    gets = server.count("ann.zip")
    assert download.download(url, cache_dir=str(tmp_path), sha256=sha, md5=md5) == path
    assert server.count("ann.zip") == gets  # no request at all the second time
    assert _files_under(tmp_path) == [path.rsplit("/", 1)[1]]


def test_resolve_downloads_checksummed_http_sources_once(archive_on_server, tmp_path):
    server, _payload, sha, _md5 = archive_on_server
    url = server.url("ann.zip")
    [sf] = sources.resolve([url], cache_dir=str(tmp_path), checksums={url: {"sha256": sha, "md5": None}})
    assert sf.url.startswith("zip://annotations/instances_val2017.json::" + str(tmp_path))
    requests = server.count()
    assert _read_all(sf) == DOC
    sources.resolve([url], cache_dir=str(tmp_path), checksums={url: {"sha256": sha}})
    assert server.count() == requests


def test_wrong_checksum_leaves_nothing_in_the_cache(archive_on_server, tmp_path):
    server, _payload, sha, _md5 = archive_on_server
    with pytest.raises(SourceError, match=f"ann.zip: sha256 mismatch: expected {'0' * 64}, got {sha}"):
        download.download(server.url("ann.zip"), cache_dir=str(tmp_path), sha256="0" * 64)
    assert _files_under(tmp_path) == []


def test_404_fails_at_once(archive_on_server, tmp_path):
    server = archive_on_server[0]
    with pytest.raises(SourceError, match=r"gone\.zip: HTTP 404 Not Found; check the URL"):
        download.download(server.url("gone.zip"), cache_dir=str(tmp_path), retries=3, backoff=0.01)
    assert server.count("gone.zip") == 1
    assert _files_under(tmp_path) == []


def test_5xx_is_retried(archive_on_server, tmp_path):
    server, payload, sha, _md5 = archive_on_server
    server.fail("ann.zip", 500, times=2)
    path = download.download(server.url("ann.zip"), cache_dir=str(tmp_path), sha256=sha, retries=3, backoff=0.01)
    assert server.count("ann.zip", "GET") == 3
    assert open(path, "rb").read() == payload


def test_connection_cut_every_time_gives_up_and_leaves_nothing(archive_on_server, tmp_path):
    server, payload, sha, _md5 = archive_on_server
    server.cut("ann.zip", after=100)  # every response stops after 100 bytes
    size = len(payload)
    with pytest.raises(SourceError, match=f"connection closed after 300 of {size} bytes; gave up after 3 attempts"):
        download.download(server.url("ann.zip"), cache_dir=str(tmp_path), sha256=sha, retries=2, backoff=0.01)
    assert [r.range for r in server.requests] == [None, "bytes=100-", "bytes=200-"]
    assert _files_under(tmp_path) == []


def test_connection_cut_once_resumes_with_a_range_request(archive_on_server, tmp_path):
    server, payload, sha, _md5 = archive_on_server
    half = len(payload) // 2
    server.cut("ann.zip", after=half, times=1)
    path = download.download(server.url("ann.zip"), cache_dir=str(tmp_path), sha256=sha, backoff=0.01)
    assert open(path, "rb").read() == payload
    assert [r.range for r in server.requests if r.path == "ann.zip"] == [None, f"bytes={half}-"]


def test_5xx_every_time_gives_up_with_a_clear_error_and_leaves_nothing(archive_on_server, tmp_path):
    server = archive_on_server[0]
    server.fail("ann.zip", 500)
    with pytest.raises(SourceError, match=r"ann\.zip: HTTP 500 Internal Server Error; gave up after 3 attempts"):
        download.download(server.url("ann.zip"), cache_dir=str(tmp_path), sha256="0" * 64, retries=2, backoff=0.01)
    assert server.count("ann.zip", "GET") == 3
    assert _files_under(tmp_path) == []


def test_wrong_checksum_after_a_resume_is_fetched_whole_once_then_leaves_nothing(archive_on_server, tmp_path):
    server, payload, _sha, _md5 = archive_on_server
    half = len(payload) // 2
    server.cut("ann.zip", after=half, times=1)
    with pytest.raises(SourceError, match=r"ann\.zip: sha256 mismatch: expected 0{64}, got [0-9a-f]{64} "
                       rf"\({len(payload)} bytes\); the download was discarded"):
        download.download(server.url("ann.zip"), cache_dir=str(tmp_path), sha256="0" * 64, backoff=0.01)
    assert [r.range for r in server.requests] == [None, f"bytes={half}-", None]
    assert _files_under(tmp_path) == []


def test_a_file_that_changed_between_attempts_is_fetched_again_whole(http_server, tmp_path):
    old, new = b"A" * 4000, b"B" * 4000
    http_server.versions("instances_val2017.json", [old, new])
    http_server.cut("instances_val2017.json", after=1000, times=1)
    sha = hashlib.sha256(new).hexdigest()
    path = download.download(http_server.url("instances_val2017.json"), cache_dir=str(tmp_path), sha256=sha,
                            backoff=0.01)
    # the resumed file (1000 old bytes + 3000 new ones) failed verification and was discarded
    assert [r.range for r in http_server.requests] == [None, "bytes=1000-", None]
    assert open(path, "rb").read() == new
    assert _files_under(tmp_path) == [path.rsplit("/", 1)[1]]


def test_partial_downloads_left_by_a_killed_process_are_removed(archive_on_server, tmp_path):

    server, payload, sha, _md5 = archive_on_server
    name = pathlib.Path(download.download(server.url("ann.zip"), cache_dir=str(tmp_path / "a"), sha256=sha)).name
    cache = tmp_path / "b"
    cache.mkdir()
    stale, live = cache / f".{name}.4242.0badf00d.part", cache / f".{name}.4343.0c0ffee0.part"
    stale.write_bytes(payload[:100])
    live.write_bytes(payload[:100])
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    path = download.download(server.url("ann.zip"), cache_dir=str(cache), sha256=sha)
    # an hour without a write: left behind; a recent one may belong to a download still running
    assert _files_under(cache) == sorted([live.name, pathlib.Path(path).name])


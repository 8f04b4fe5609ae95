"""pipeline/ingest/sources.py: resolving, sniffing, zip/gz, ranges, remote reads over real HTTP."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest import sources
from pipeline.config import Source
from pipeline.errors import BadFileError, SourceError

# a small COCO-shaped document with multi-byte UTF-8, escapes and enough length for ranges
DOC = json.dumps(
    {
        "info": {"description": "caf\u00e9 \u732b \U0001f355"},
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": 10, "width": 20} for i in range(60)],
        "annotations": [{"id": i, "image_id": i % 60, "caption": f'say "hi" \\ n\u00b0{i}'} for i in range(60)],
    },
    ensure_ascii=False,
).encode("utf-8")
BOM = b"\xef\xbb\xbf"


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _read_all(sf) -> bytes:
    with sources.open_document(sf) as f:
        return f.read()


def _files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name, split",
    [
        ("instances_val2017.json", "val2017"),
        ("image_info_test-dev2017.json", "test-dev2017"),
        ("stuff_train2017.json", "train2017"),
        ("person_keypoints_val2014.json", "val2014"),
        ("captions_train2017.json.gz", "train2017"),
        ("instances_valminusminival2014.json", "valminusminival2014"),
        ("annotations/instances_val2017.json", "val2017"),
        ("lvis_v1_val.json", None),
        ("instances.json", None),
        ("val2017.json", None),
        ("instances_val2017.txt", None),
    ],
)
def test_split_from_name(name, split):
    assert sources.split_from_name(name) == split


# ------------------------------------------------------------------------------ local files


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """The same document as every kind of source; name -> SourceFile."""
    d = tmp_path_factory.mktemp("docs")
    (d / "plain_val2017.json").write_bytes(DOC)
    (d / "bom_val2017.json").write_bytes(BOM + DOC)
    (d / "gz_val2017.json.gz").write_bytes(gzip.compress(DOC, mtime=0))
    (d / "gzbom_val2017.json.gz").write_bytes(gzip.compress(BOM + DOC, mtime=0))
    _zip(d / "stored.zip", {"annotations/stored_val2017.json": DOC, "annotations/sbom_val2017.json": BOM + DOC})
    _zip(d / "deflated.zip", {"annotations/deflated_val2017.json": DOC}, zipfile.ZIP_DEFLATED)
    found = sources.resolve([str(d)], cache_dir=str(d / "cache"))
    return {sf.name.split("_")[0]: sf for sf in found}


def test_directory_expands_to_every_document_with_the_right_reading_mode(docs):
    assert sorted(docs) == ["bom", "deflated", "gz", "gzbom", "plain", "sbom", "stored"]
    expect = {  # name: (seekable, compression, size, bom)
        "plain": (True, None, len(DOC), 0),
        "bom": (True, None, len(DOC), 3),
        "gz": (False, "gzip", None, 0),
        "gzbom": (False, "gzip", None, 3),
        "stored": (True, None, len(DOC), 0),
        "sbom": (True, None, len(DOC), 3),
        "deflated": (False, None, len(DOC), 0),
    }
    for key, sf in docs.items():
        assert (sf.seekable, sf.compression, sf.size, sf.bom) == expect[key], key
        assert sf.name == f"{key}_val2017.json"
        assert _read_all(sf) == DOC, key
    assert docs["stored"].url.startswith("zip://annotations/stored_val2017.json::/")
    assert docs["deflated"].data_offset is None and docs["stored"].data_offset > 0


@pytest.mark.parametrize("kind", ["plain", "bom", "gz", "gzbom", "stored", "sbom", "deflated"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_read_range_equals_the_slice(docs, kind, data):
    sf = docs[kind]
    start = data.draw(st.integers(0, len(DOC) + 10), label="start")
    end = data.draw(st.integers(start, len(DOC) + 20), label="end")
    assert sources.read_range(sf, start, end) == DOC[start:end]


def test_read_range_rejects_reversed_ranges(docs):
    with pytest.raises(ValueError, match="invalid range"):
        sources.read_range(docs["plain"], 10, 5)


def test_directory_listing_rules(tmp_path):
    (tmp_path / "b.json").write_bytes(DOC)
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(DOC))
    (tmp_path / ".hidden.json").write_bytes(DOC)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "c.json").write_bytes(DOC)
    (tmp_path / "sub" / "deeper" / "d.json").write_bytes(DOC)
    found = sources.resolve([str(tmp_path)], cache_dir=str(tmp_path / "cache"))
    assert [sf.url[len(str(tmp_path)):] for sf in found] == ["/a.json.gz", "/b.json", "/sub/c.json"]
    assert [sf.name for sf in found] == ["a.json", "b.json", "c.json"]


def test_relative_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "instances_val2017.json").write_bytes(DOC)
    monkeypatch.chdir(tmp_path)
    [sf] = sources.resolve(["instances_val2017.json"], cache_dir="cache")
    assert sf.url == str(tmp_path / "instances_val2017.json")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.json: no such file"):
        sources.resolve([str(tmp_path / "nope.json")], cache_dir=str(tmp_path))


def test_content_is_sniffed_not_the_name(tmp_path):
    (tmp_path / "instances_val2017.json").write_bytes(gzip.compress(DOC))
    _zip(tmp_path / "captions_val2017.json", {"x/captions_val2017.json": DOC}, zipfile.ZIP_DEFLATED)
    gz, zipped = sources.resolve(
        [str(tmp_path / "instances_val2017.json"), str(tmp_path / "captions_val2017.json")], cache_dir=str(tmp_path)
    )
    assert gz.compression == "gzip" and not gz.seekable and _read_all(gz) == DOC
    assert zipped.url == f"zip://x/captions_val2017.json::{tmp_path / 'captions_val2017.json'}"
    assert _read_all(zipped) == DOC


def test_zip_members_are_read_in_place_and_selectable(tmp_path):
    archive = _zip(tmp_path / "ann.zip", {
        "annotations/instances_val2017.json": DOC,
        "annotations/captions_val2017.json": b'{"images":[]}',
        "annotations/readme.txt": b"text",
        "__MACOSX/annotations/._instances_val2017.json": b"junk",
    }, zipfile.ZIP_DEFLATED)
    before = _files_under(tmp_path)
    found = sources.resolve([str(archive)], cache_dir=str(tmp_path / "cache"))
    assert [sf.name for sf in found] == ["captions_val2017.json", "instances_val2017.json"]
    assert _read_all(found[1]) == DOC
    picked = sources.resolve([str(archive)], cache_dir=str(tmp_path / "cache"),
                             members={str(archive): ["instances_val2017.json"]})
    assert [sf.url for sf in picked] == [f"zip://annotations/instances_val2017.json::{archive}"]
    assert _files_under(tmp_path) == before  # nothing extracted, no cache written
    with pytest.raises(SourceError, match="no member 'nope.json' in the archive; members: .*captions_val2017"):
        sources.resolve([str(archive)], cache_dir=str(tmp_path), members={str(archive): ["nope.json"]})


def test_explicit_zip_url(tmp_path):
    archive = _zip(tmp_path / "ann.zip", {"a/instances_val2017.json": DOC})
    [sf] = sources.resolve([f"zip://a/instances_val2017.json::{archive}"], cache_dir=str(tmp_path))
    assert sf.seekable and sources.read_range(sf, 5, 50) == DOC[5:50]


@pytest.mark.parametrize("member", ["../evil_val2017.json", "/etc/evil_val2017.json", "a/../../evil_val2017.json"])
def test_zip_slip_member_names_are_refused(tmp_path, member):
    archive = _zip(tmp_path / "evil.zip", {member: DOC})
    with pytest.raises(SourceError, match="absolute path or '..' in the name; refusing it"):
        sources.resolve([str(archive)], cache_dir=str(tmp_path))
    with pytest.raises(SourceError, match="refusing it"):
        sources.resolve([f"zip://{member}::{archive}"], cache_dir=str(tmp_path))


def test_corrupt_gzip_is_a_bad_file(tmp_path):
    (tmp_path / "x_val2017.json.gz").write_bytes(gzip.compress(DOC)[:-40])
    with pytest.raises(BadFileError, match="x_val2017.json.gz: corrupt or truncated compressed data"):
        [sf] = sources.resolve([str(tmp_path / "x_val2017.json.gz")], cache_dir=str(tmp_path))
        _read_all(sf)  # small files are found corrupt already while sniffing


@pytest.mark.parametrize("data", [DOC, BOM + DOC, gzip.compress(DOC), gzip.compress(BOM + DOC)],
                         ids=["plain", "bom", "gzip", "gzip-bom"])
def test_a_file_read_whole_is_its_document(data):
    assert sources.read_whole(data, "sa_1.json", 1 << 20) == DOC


def test_a_file_read_whole_is_refused_when_it_decompresses_beyond_the_bound_or_is_corrupt():
    bomb = gzip.compress(b"[" + b" " * (3 << 20) + b"]")
    assert len(sources.read_whole(bomb, "sa_1.json", 4 << 20)) == (3 << 20) + 2
    with pytest.raises(BadFileError, match=r"^sa_1\.json: decompresses to more than 2 MB; a per-image document "
                       "that large is not supported$"):
        sources.read_whole(bomb, "sa_1.json", 2 << 20)
    with pytest.raises(BadFileError, match=r"^sa_1\.json: corrupt or truncated compressed data: "):
        sources.read_whole(gzip.compress(DOC)[:-40], "sa_1.json", 1 << 20)


def test_local_checksum_is_verified(tmp_path):
    path = tmp_path / "instances_val2017.json"
    path.write_bytes(DOC)
    good = {"sha256": hashlib.sha256(DOC).hexdigest()}
    assert sources.resolve([str(path)], cache_dir=str(tmp_path), checksums={str(path): good})
    with pytest.raises(SourceError, match="md5 mismatch: expected 0{32}, got"):
        sources.resolve([str(path)], cache_dir=str(tmp_path), checksums={str(path): {"md5": "0" * 32}})


def test_resolve_sources_applies_the_config_split(tmp_path):
    (tmp_path / "export.json").write_bytes(DOC)
    [sf] = sources.resolve_sources([Source(url=str(tmp_path / "export.json"), split="train")], cache_dir=str(tmp_path))
    assert sf.split == "train" and sources.split_from_name(sf.name) is None


# ------------------------------------------------------------------------------ http: remote reads


def test_http_document_is_read_with_ranges(http_server, tmp_path):
    (http_server.root / "instances_val2017.json").write_bytes(BOM + DOC)
    [sf] = sources.resolve([http_server.url("instances_val2017.json")], cache_dir=str(tmp_path))
    assert (sf.seekable, sf.size, sf.bom) == (True, len(DOC), 3)
    before = http_server.count(method="GET")
    assert sources.read_range(sf, 100, 200) == DOC[100:200]
    assert http_server.count(method="GET") == before + 1
    assert http_server.requests[-1].range == "bytes=103-202"
    assert _read_all(sf) == DOC


def test_http_without_range_support_is_streamed(http_server, tmp_path):
    (http_server.root / "instances_val2017.json").write_bytes(DOC)
    http_server.ranges = False
    [sf] = sources.resolve([http_server.url("instances_val2017.json")], cache_dir=str(tmp_path))
    assert not sf.seekable
    assert sources.read_range(sf, 1000, 1100) == DOC[1000:1100]


def test_http_zip_members_without_checksum_are_read_remotely(http_server, tmp_path):
    _zip(http_server.root / "ann.zip", {"annotations/instances_val2017.json": DOC,
                                        "annotations/captions_val2017.json": DOC}, zipfile.ZIP_STORED)
    found = sources.resolve([http_server.url("ann.zip")], cache_dir=str(tmp_path / "cache"))
    assert [sf.url for sf in found] == [f"zip://annotations/{n}::{http_server.url('ann.zip')}"
                                        for n in ("captions_val2017.json", "instances_val2017.json")]
    assert all(sf.seekable for sf in found)
    assert sources.read_range(found[1], 7, 77) == DOC[7:77]
    assert http_server.requests[-1].range is not None  # one range of the archive, not the whole file
    assert not (tmp_path / "cache").exists()


def test_http_resolve_reports_the_status(http_server, tmp_path):
    with pytest.raises(SourceError, match=r"missing\.json: no such file \(HTTP 404\)"):
        sources.resolve([http_server.url("missing.json")], cache_dir=str(tmp_path))


def test_remote_reads_retry_5xx_then_fail_clearly(http_server, tmp_path):
    (http_server.root / "instances_val2017.json").write_bytes(DOC)
    http_server.fail("instances_val2017.json", 503, times=2)
    [sf] = sources.resolve([http_server.url("instances_val2017.json")], cache_dir=str(tmp_path))
    assert _read_all(sf) == DOC
    http_server.fail("instances_val2017.json", 500)
    with pytest.raises(SourceError, match=r"instances_val2017\.json: HTTP 500 Internal Server Error; gave up after "
                       "3 attempts"):
        sources.resolve([http_server.url("instances_val2017.json")], cache_dir=str(tmp_path))
    assert not (tmp_path / "cache").exists()


def test_a_stream_cut_mid_file_is_a_source_error(http_server, tmp_path):
    """Without a checksum a remote document is read in place; a cut is a clear error, not a crash."""
    from pipeline.ingest.run import run_ingest

    (http_server.root / "instances_val2017.json").write_bytes(DOC)
    url = http_server.url("instances_val2017.json")
    [sf] = sources.resolve([url], cache_dir=str(tmp_path))
    http_server.cut("instances_val2017.json", after=1000)
    with pytest.raises(SourceError, match=r"instances_val2017\.json: the connection was lost or the server failed "
                       r"while reading: .*received 1000 of \d+ bytes"):
        _read_all(sf)
    with pytest.raises(SourceError, match="the connection was lost or the server failed while reading"):
        run_ingest([url], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)
    assert not list(tmp_path.rglob("*.parquet"))


# ------------------------------------------------------------------------------ object store


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with bucket ``coco``; yields the storage options."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="coco")
    try:
        yield {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    finally:
        server.stop()


def test_s3_prefix_with_json_gz_and_zip(s3, tmp_path):
    import fsspec

    fs = fsspec.filesystem("s3", **s3)
    fs.pipe("coco/ann/instances_val2017.json", DOC)
    fs.pipe("coco/ann/captions_val2017.json.gz", gzip.compress(DOC))
    archive = io.BytesIO()
    _zip(archive, {"a/stuff_val2017.json": DOC})
    fs.pipe("coco/ann/more/stuff.zip", archive.getvalue())
    found = sources.resolve(["s3://coco/ann/"], cache_dir=str(tmp_path), storage_options=s3)
    assert [(sf.url, sf.seekable) for sf in found] == [
        ("s3://coco/ann/captions_val2017.json.gz", False),
        ("s3://coco/ann/instances_val2017.json", True),
        ("zip://a/stuff_val2017.json::s3://coco/ann/more/stuff.zip", True),
    ]
    for sf in found:
        assert sources.read_range(sf, 33, 3333) == DOC[33:3333]
        assert _read_all(sf) == DOC
    sha = hashlib.sha256(archive.getvalue()).hexdigest()
    [cached] = sources.resolve(["s3://coco/ann/more/stuff.zip"], cache_dir=str(tmp_path / "cache"),
                               checksums={"s3://coco/ann/more/stuff.zip": {"sha256": sha}}, storage_options=s3)
    assert cached.url.startswith(f"zip://a/stuff_val2017.json::{tmp_path / 'cache'}/") and _read_all(cached) == DOC

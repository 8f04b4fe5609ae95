"""Hostile JSON: nesting thousands deep, a gigabyte string, a billion-element array.

Each fails with one ``CocolakeError`` line naming the file and the problem, in bounded time
(a subprocess that does not finish within ``_TIMEOUT`` fails the test) and bounded memory
(the ingest subprocess reports its own peak RSS, which must stay under ``_PEAK_RSS``).

The gigabyte documents never exist in full: a ``.json.gz`` is a run of gzip members (gzip
readers concatenate them), one small member for the start, the same 1 MB block compressed
once and repeated, one member for the end: a few MB on disk that decompress to 1-2 GB.
Over HTTP the loopback server makes the body 1 MB at a time as it sends it.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import re
import subprocess
import sys

import pytest

from pipeline.errors import BadFileError
from pipeline.ingest.run import run_ingest
from pipeline.ingest.scan import MAX_DEPTH

_MB = 1 << 20
_TIMEOUT = 120  # seconds; the limits below are hit after 256 MB, a few seconds on a slow machine
_PEAK_RSS = 1 << 30  # bytes; a failed ingest stays around 350 MB, parsing what it refuses would take GBs

# runs the real command in a fresh interpreter and reports its exit status and peak RSS
# the child's own peak: VmHWM counts from its exec; ru_maxrss would carry the peak of the
# process it was forked from (the test run itself) across the exec
_CHILD = """
import json, resource, sys
from pipeline.cli import main
code = main(sys.argv[1:])
try:
    with open("/proc/self/status") as f:
        peak = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) * 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"code": code, "peak": peak}))
"""

IMAGE = b'{"id": 1, "file_name": "a.jpg", "height": 5, "width": 5}'
ANNOTATION_START = b'{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0, '
HEAD = b'{"images": [' + IMAGE + b'], "categories": [{"id": 1, "name": "x"}], "annotations": ['


def _gz_bomb(path: pathlib.Path, start: bytes, unit: bytes, megabytes: int, end: bytes) -> pathlib.Path:
    """``start + unit * (megabytes MB / len(unit)) + end``, gzip-compressed, in a few MB."""
    block = unit * (_MB // len(unit))
    assert len(block) == _MB
    member = gzip.compress(block, compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(gzip.compress(start, mtime=0))
        for _ in range(megabytes):
            f.write(member)
        f.write(gzip.compress(end, mtime=0))
    return path


def _ingest_in_subprocess(source: str, tmp_path: pathlib.Path, *extra: str) -> tuple[str, int]:
    """Run ``cocolake ingest`` on ``source``; (its error line, its peak RSS in bytes)."""
    argv = [sys.executable, "-c", _CHILD, "ingest", "--source", source, "--warehouse", str(tmp_path / "wh"),
            "--dataset", "d", "--workers", "1", "--no-progress", *extra]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the ingest of {source} did not end within {_TIMEOUT} s")
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["code"] == 1, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("cocolake ingest: error: ")]
    assert len(errors) == 1, done.stderr
    assert not list((tmp_path / "wh").rglob("*.parquet")), "a failed ingest left parts behind"
    return errors[0].removeprefix("cocolake ingest: error: "), report["peak"]


def _assert_bounded(peak: int) -> None:
    assert peak < _PEAK_RSS, f"peak RSS {peak >> 20} MB"


# ---------------------------------------------------------------------------- a gigabyte string


@pytest.mark.slow
@pytest.mark.parametrize("opening, unit, mb, closing", [
    (b'"note": "', b"a", 1024, b'"}]}'),  # a gigabyte-long string
    (b'"segmentation": [[0', b",0", 2048, b"]]}]}"),  # a billion zeros
], ids=["a_gigabyte_string", "a_billion_zeros_in_a_segmentation"])
def test_a_gigabyte_record(tmp_path, opening, unit, mb, closing):
    src = _gz_bomb(tmp_path / "instances_val2017.json.gz", HEAD + ANNOTATION_START + opening, unit, mb, closing)
    assert src.stat().st_size < 4 * _MB
    error, peak = _ingest_in_subprocess(str(src), tmp_path)
    assert error.startswith("instances_val2017.json: annotations: a record starting near byte ")
    assert error.endswith("is larger than 256 MB; records that large are not supported")
    _assert_bounded(peak)


@pytest.mark.slow
def test_a_gigabyte_string_outside_the_record_arrays(tmp_path):
    src = _gz_bomb(tmp_path / "instances_val2017.json.gz", b'{"info": {"description": "', b"a", 1024,
                   b'"}, "images": [], "annotations": []}')
    error, peak = _ingest_in_subprocess(str(src), tmp_path)
    assert error == ("instances_val2017.json: the top-level values other than images, annotations, categories, "
                     "licenses exceed 64 MB")
    _assert_bounded(peak)


@pytest.mark.slow
def test_a_gigabyte_string_served_over_http(http_server, tmp_path):
    """A plain (uncompressed) 1 GB document read remotely, streamed: no file, no download."""
    start = HEAD + ANNOTATION_START + b'"note": "'
    end = b'"}]}'
    size = 1 << 30

    def piece(a: int, b: int) -> bytes:
        out = bytearray(b"a" * (b - a))
        for at, text in ((0, start), (size - len(end), end)):  # the ends of the document, where they fall
            lo, hi = max(a, at), min(b, at + len(text))
            if lo < hi:
                out[lo - a: hi - a] = text[lo - at: hi - at]
        return bytes(out)

    http_server.generate("instances_val2017.json", size, piece)
    error, peak = _ingest_in_subprocess(http_server.url("instances_val2017.json"), tmp_path)
    assert error.startswith("instances_val2017.json: annotations: a record starting near byte ")
    assert "larger than 256 MB" in error
    _assert_bounded(peak)
    assert http_server.count("instances_val2017.json", "GET") <= 3  # streamed once, not fetched in pieces


# ---------------------------------------------------------------------------- a billion zeros


@pytest.mark.slow
def test_a_billion_zeros_as_a_record_array(tmp_path):
    src = _gz_bomb(tmp_path / "instances_val2017.json.gz", b'{"annotations": [], "images": [0', b",0", 2048,
                   b"]}")
    error, peak = _ingest_in_subprocess(str(src), tmp_path)
    assert re.match(r"instances_val2017\.json: images: a record starting near byte \d+ is larger than 256 MB", error)
    _assert_bounded(peak)


@pytest.mark.slow
def test_a_gigabyte_per_image_document(tmp_path):
    """Per-image sets read whole documents: a gzip one is decompressed up to a limit, never whole."""
    folder = tmp_path / "set"
    folder.mkdir()
    _gz_bomb(folder / "sa_1.json.gz", b'{"image": ' + IMAGE + b', "annotations": [' + ANNOTATION_START
             + b'"note": "', b"a", 1024, b'"}]}')
    (folder / "sa_2.json").write_bytes(b'{"image": {"id": 2, "file_name": "b.jpg", "height": 5, "width": 5}, '
                                       b'"annotations": []}')
    error, peak = _ingest_in_subprocess(str(folder), tmp_path)
    assert error == "sa_1.json: decompresses to more than 256 MB; a per-image document that large is not supported"
    _assert_bounded(peak)


# ---------------------------------------------------------------------------- nesting thousands deep


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"0" + b"]" * levels


DEEP_DOCUMENTS = {
    "segmentation": HEAD + ANNOTATION_START + b'"segmentation": ' + _deep(100_000) + b"}]}",
    "extra_key": b'{"images": [{"id": 1, "file_name": "a.jpg", "height": 5, "width": 5, "meta": {"x": '
                 + _deep(100_000) + b'}}], "annotations": []}',
    "category": b'{"images": [], "annotations": [], "categories": [{"id": 1, "name": "x", "k": '
                + _deep(100_000) + b"}]}",
    # between our limit and the parsers': orjson reads 1024 levels, writes 254
    "just_past_the_limit": HEAD + ANNOTATION_START + b'"segmentation": ' + _deep(MAX_DEPTH) + b"}]}",
    "a_thousand_levels": HEAD + ANNOTATION_START + b'"segmentation": ' + _deep(1000) + b"}]}",
    "info": b'{"info": ' + _deep(100_000) + b', "images": [], "annotations": []}',
    "unknown_top_level_key": b'{"images": [], "annotations": [], "extra": ' + _deep(100_000) + b"}",
}


@pytest.mark.parametrize("where", list(DEEP_DOCUMENTS))
def test_nesting_too_deep_is_refused_while_scanning(tmp_path, where):
    src = tmp_path / "instances_val2017.json"
    src.write_bytes(DEEP_DOCUMENTS[where])
    with pytest.raises(BadFileError, match=r"^instances_val2017\.json: brackets nested deeper than 128 levels at "
                       r"byte \d+; nesting that deep is not supported$"):
        run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)
    assert not list((tmp_path / "wh").rglob("*.parquet"))


def test_nesting_up_to_the_limit_is_ingested(tmp_path):
    """A record right at the limit (the extra key keeps it) goes through orjson both ways."""
    nested = _deep(MAX_DEPTH - 4)  # + the top-level object, "images", the record and "meta"
    doc = b'{"images": [{"id": 1, "file_name": "a.jpg", "height": 5, "width": 5, "meta": ' + nested + b"}]}"
    src = tmp_path / "image_info_val2017.json"
    src.write_bytes(doc)
    run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)
    from pipeline.query.views import connect

    [(extra,)] = connect(str(tmp_path / "wh"), "d").execute("SELECT extra FROM raw_images").fetchall()
    assert json.loads(extra) == {"meta": json.loads(nested)}


def test_a_list_nested_thousands_deep_at_the_top_level(tmp_path):
    src = tmp_path / "instances_val2017.json"
    src.write_bytes(_deep(100_000))
    with pytest.raises(BadFileError, match="the top level is a list; expected a COCO JSON object"):
        run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)


def test_a_per_image_document_nested_thousands_deep(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "sa_1.json").write_bytes(b'{"image": ' + IMAGE + b', "annotations": [' + ANNOTATION_START
                                       + b'"segmentation": ' + _deep(100_000) + b"}]}")
    (folder / "sa_2.json").write_bytes(b'{"image": {"id": 2, "file_name": "b.jpg", "height": 5, "width": 5}, '
                                       b'"annotations": []}')
    with pytest.raises(BadFileError, match=r"^sa_1\.json: nested too deeply"):
        run_ingest([str(folder)], warehouse=str(tmp_path / "wh"), dataset="d", workers=1)


def test_the_command_reports_deep_nesting_as_one_line(tmp_path, capsys):
    from pipeline.cli import main

    src = tmp_path / "instances_val2017.json"
    src.write_bytes(DEEP_DOCUMENTS["info"])
    code = main(["ingest", "--source", str(src), "--warehouse", str(tmp_path / "wh"), "--dataset", "d",
                 "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    [line] = [ln for ln in err.splitlines() if "error" in ln]
    assert line.startswith("cocolake ingest: error: instances_val2017.json: brackets nested deeper than 128")

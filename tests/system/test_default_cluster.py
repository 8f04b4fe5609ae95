"""The local Dask cluster as a user meets it: the real ``cocolake`` command, worker processes.

- a bad record or file fails with cocolake's one line on stderr (besides the progress
  lines) and exit status 1: no ``Traceback``, nothing from ``distributed``, and the
  warehouse folder the run made is gone again. The real command runs the cases of the bad-record corpus
  (``tests/cases/bad_records.py``) that reach a different part of the code: each section,
  the compiled kernels and number parsing (NaN, numbers beyond int64, sizes too large to
  encode), the scan's whole-file failures while the cluster starts, and a bad results
  file. Every case of the corpus also runs through the worker processes of a real cluster
  (``dask_cluster_service``), in this process: its error crosses the process boundary as
  the same one line, and the workers print no warning and raise nothing else;
- Ctrl-C (SIGINT to the process group, as a terminal sends it) while the cluster starts,
  as the chunk tasks start, and while they run: ``interrupted``, exit status 130, the
  same silence, and once the command has exited no process of it is left and no warehouse folder;
- with ``-v`` the Dask output is all there.

The command's cases run on a cluster of two workers (``--workers 2``: the default's cluster, one
worker per core, on a two-core machine); one case and the Ctrl-C runs use no ``--workers``
at all, on inputs past ``IN_PROCESS_BYTES`` (smaller ones run in the command's own process).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from pipeline.defaults import IN_PROCESS_BYTES
from pipeline.errors import BadFileError, BadRecordError
from pipeline.ingest.run import run_ingest
from tests.cases.bad_records import BAD_FILES, BAD_RECORDS, base, dumps

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROGRESS = re.compile(r"(scan|ingest): \d+/\d+ tasks")


def _command() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("cocolake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _cocolake(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300)


def _messages(stderr: str) -> list[str]:
    """stderr without the progress lines; it must hold nothing from Dask."""
    assert "Traceback" not in stderr and "distributed." not in stderr, stderr
    return [line for line in stderr.splitlines() if not PROGRESS.fullmatch(line)]


def _parts(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def _write(directory: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------- the corpus


def _fails_with_one_line(src: pathlib.Path, problem: str, tmp_path, *options: str) -> None:
    done = _cocolake("ingest", "--source", str(src), "--warehouse", "wh", "--dataset", "d", *options, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = _messages(done.stderr)
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(rf"cocolake ingest: error: (?:.*/)?{re.escape(src.name)}: {problem}.*", lines[0]), lines[0]
    assert not (tmp_path / "wh").exists(), _parts(tmp_path / "wh")  # the run made it: nothing is left


# the corpus cases the real command runs (each starts a cluster: ~4 s): one per section and
# per kind of code that judges the record (Python checks, the compiled number parser and
# mask kernels, where NumPy could warn); the whole corpus runs through worker processes below
COMMAND_RECORDS = (
    "polygon_with_4_numbers", "polygon_with_nan", "polygon_with_integer_beyond_int64",
    "polygon_on_an_image_too_large_to_encode", "rle_too_large_to_encode", "area_nan", "keypoints_with_nan",
    "id_beyond_int64", "annotation_on_an_image_that_was_rejected", "string_category_among_integer_categories",
    "license_is_not_an_object",
)
# whole-file problems: found by the scan while the cluster starts, by a chunk task (deep
# nesting), after the tasks (duplicate ids), and by the decompression
COMMAND_FILES = ("empty", "truncated", "nested_5000_deep", "duplicate_annotation_ids", "corrupt_gzip")


def _cases(corpus, names):
    by_name = {c.name: c for c in corpus}
    return [by_name[n] for n in names]


@pytest.mark.parametrize("case", _cases(BAD_RECORDS, COMMAND_RECORDS), ids=lambda c: c.name)
def test_a_bad_record_is_one_line_on_the_cluster(case, tmp_path):
    src = _write(tmp_path / "src", case.file, dumps(case.doc))
    _fails_with_one_line(src, rf"{re.escape(case.record)}: {case.problem}", tmp_path, "--workers", "2")


@pytest.mark.parametrize("case", _cases(BAD_FILES, COMMAND_FILES), ids=lambda c: c.name)
def test_a_bad_file_is_one_line_on_the_cluster(case, tmp_path):
    src = _write(tmp_path / "src", case.file, case.data)
    _fails_with_one_line(src, case.problem, tmp_path, "--workers", "2")


# what a worker may print when a task raises: Dask's record of it (a dated line, then Key:,
# State:, Task:, Exception:, Traceback: lines), with the exception one of cocolake's
_DASK_RECORD = re.compile(r"\d{4}-\d\d-\d\d [\d:,]+ - distributed\.[\w.]+ - [A-Z]+ - .*|(Key|State|Task|Traceback): .*|$")
_EXCEPTION_LINE = re.compile(r"Exception: ['\"](BadRecordError|BadFileError)\(.*")


@pytest.mark.parametrize("case", [*BAD_RECORDS, *BAD_FILES], ids=lambda c: c.name)
def test_every_corpus_case_crosses_the_worker_processes_as_its_one_line(case, dask_cluster_service, tmp_path):
    """On a shared cluster the scan runs in a worker too: every check of the corpus raises in
    a worker process, and the error the command would print arrives whole, as one line."""
    record = case in BAD_RECORDS
    src = _write(tmp_path / "src", case.file, dumps(case.doc) if record else case.data)
    problem = rf"{re.escape(case.record)}: {case.problem}" if record else case.problem
    marks = dask_cluster_service.worker_log_marks()
    with pytest.raises(BadRecordError if record else BadFileError) as info:
        run_ingest([str(src)], warehouse=str(tmp_path / "wh"), dataset="d", scheduler=dask_cluster_service.address)
    message = str(info.value)
    assert "\n" not in message
    assert re.fullmatch(rf"(?:.*/)?{re.escape(src.name)}: {problem}.*", message), message
    assert not (tmp_path / "wh").exists(), _parts(tmp_path / "wh")  # the run made it: nothing is left
    printed = dask_cluster_service.worker_output_since(marks)
    for line in printed.splitlines():
        assert _DASK_RECORD.fullmatch(line) or _EXCEPTION_LINE.fullmatch(line), printed


def test_the_default_workers_fail_with_one_line_also_when_port_8787_is_taken(tmp_path):
    """Dask's default dashboard port taken (by another cluster, say): no warning about it."""
    case = BAD_RECORDS[0]
    # past the size that runs in the command's own process: the default is then a cluster
    src = _write(tmp_path / "src", case.file, dumps(case.doc) + b" " * IN_PROCESS_BYTES)
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(socket.socket())
        try:
            holder.bind(("127.0.0.1", 8787))
            holder.listen()
        except OSError:  # already taken: in use all the same
            pass
        _fails_with_one_line(src, rf"{re.escape(case.record)}: {case.problem}", tmp_path)


def test_verbose_shows_what_dask_says(tmp_path):
    case = BAD_RECORDS[0]
    src = _write(tmp_path / "src", case.file, dumps(case.doc))
    done = _cocolake("-v", "ingest", "--source", str(src), "--warehouse", "wh", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 1
    assert "distributed.worker - ERROR - Compute Failed" in done.stderr  # from a worker process
    assert "distributed.scheduler" in done.stderr  # from the scheduler, in the command's process
    assert done.stderr.strip().splitlines()[-1].startswith("cocolake ingest: error: instances_val2017.json: ")


def test_a_bad_detection_is_one_line_on_the_cluster(tmp_path):
    gt = _write(tmp_path / "src", "instances_val2017.json", dumps(base()))
    assert _cocolake("ingest", "--source", str(gt), "--warehouse", "wh", "--dataset", "d", "--workers", "1",
                     cwd=tmp_path).returncode == 0
    before = _parts(tmp_path / "wh")
    detections = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [1, 1, 2, 2]}] * 50
    detections.append({"image_id": 1, "category_id": 1, "score": "high", "bbox": [1, 1, 2, 2]})
    results = _write(tmp_path / "src", "dets.json", json.dumps(detections).encode())
    done = _cocolake("ingest-results", str(results), "--run", "r", "--warehouse", "wh", "--dataset", "d",
                     "--workers", "2", "--chunk-mb", "0.001", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = _messages(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("cocolake ingest-results: error: dets.json: detection #50: "), lines
    assert _parts(tmp_path / "wh") == before


# ---------------------------------------------------------------------------- Ctrl-C


@pytest.fixture(scope="module")
def large_file(coco_mini, tmp_path_factory) -> pathlib.Path:
    """coco-mini's instances repeated with new ids: 8,000 images, ~34 MB, a few seconds of ingest
    (on the default cluster: padded past ``IN_PROCESS_BYTES``)."""
    images, anns, cats = [], [], None
    for name in ("instances_train2017.json", "instances_val2017.json"):
        doc = json.loads((coco_mini / "annotations" / name).read_text())
        cats = cats or doc["categories"]
        images += doc["images"]
        anns += doc["annotations"]
    by_image: dict = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    out_images, out_anns = [], []
    copy = 0
    while len(out_images) < 8000:
        for im in images[: 8000 - len(out_images)]:
            new_id = copy * 1_000_000 + im["id"]
            out_images.append(dict(im, id=new_id, file_name=f"{new_id:012d}.jpg"))
            out_anns += [dict(a, id=len(out_anns) + k + 1, image_id=new_id)
                         for k, a in enumerate(by_image.get(im["id"], []))]
        copy += 1
    path = tmp_path_factory.mktemp("large") / "instances_train2017.json"
    data = json.dumps({"images": out_images, "annotations": out_anns, "categories": cats}).encode()
    # past the size that runs in the command's own process (trailing whitespace): a cluster starts
    path.write_bytes(data + b" " * max(0, IN_PROCESS_BYTES + 1 - len(data)))
    return path


def _cluster_starting(proc: subprocess.Popen) -> bool:
    """A worker process of the command's cluster exists (it may still be starting)."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    # a spawned worker runs spawn_main; the fork server (which forks the workers) forkserver's main
    return any(("spawn_main" in cmd or "multiprocessing.forkserver" in cmd)
               for cmd in (" ".join(c.cmdline()) for c in children if c.is_running()))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


MOMENTS = {
    "cluster-starting": None,  # as soon as a worker process exists
    "tasks-starting": re.compile(r"scan: 1/1 tasks"),  # the scan is done, the chunk tasks are submitted
    "tasks-running": re.compile(r"ingest: ([1-9]\d*)/(\d+) tasks"),  # parts written, other tasks running
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_is_one_line_and_leaves_no_part_and_no_process(moment, large_file, tmp_path):
    proc = subprocess.Popen([*_command(), "ingest", "--source", str(large_file), "--warehouse", "wh"], cwd=tmp_path,
                            env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        seen = []
        if MOMENTS[moment] is None:
            deadline = time.monotonic() + 120
            while not _cluster_starting(proc):
                assert proc.poll() is None and time.monotonic() < deadline, "no worker process started"
                time.sleep(0.02)
        else:
            for line in proc.stderr:  # the command is blocked on a full pipe at most: no deadlock
                seen.append(line.rstrip("\n"))
                if at := MOMENTS[moment].fullmatch(seen[-1]):
                    break
            else:
                pytest.fail(f"the command ended before {MOMENTS[moment].pattern!r}: {seen}")
            assert moment != "tasks-running" or int(at[1]) < int(at[2]), "too few tasks to interrupt one"
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=120)[1]  # stderr alone is a pipe: read() takes what is buffered too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = "\n".join(seen + [err])
    assert proc.returncode == 130, stderr
    assert _messages(stderr) == ["cocolake ingest: interrupted"], stderr
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid):  # its worker processes and multiprocessing's resource tracker
        assert time.monotonic() < deadline, "processes of the command are still running after it exited"
        time.sleep(0.1)
    assert not (tmp_path / "wh").exists(), _parts(tmp_path / "wh")

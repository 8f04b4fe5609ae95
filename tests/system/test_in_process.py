"""An ingest given no worker count runs in its own process when its input is small.

A local cluster costs 0.5-1.5 s to start and close; on up to ``IN_PROCESS_BYTES`` of
documents a second worker saves less. The rule (``cluster.local_workers``), the command's
first look at its sources (``cluster.local_json_sizes``: no fork server started for such a
run), and the real command on both sides of the threshold.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from pipeline.defaults import IN_PROCESS_BYTES
from pipeline.ingest.cluster import local_json_sizes, local_workers
from pipeline.ingest.run import run_ingest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_rule_keeps_what_was_asked_and_runs_small_known_inputs_here():
    small, big = [IN_PROCESS_BYTES // 2] * 2, [IN_PROCESS_BYTES // 2, IN_PROCESS_BYTES // 2 + 1]
    assert local_workers(None, None, small) == 1
    assert local_workers(None, None, [IN_PROCESS_BYTES]) == 1
    assert local_workers(None, None, big) is None  # the default: one worker per core
    assert local_workers(None, None, [10, None]) is None  # a size not known
    assert local_workers(None, None, None) is None  # sets of per-image files
    assert local_workers(None, None, []) is None
    assert local_workers(2, None, small) == 2  # asked for: kept
    assert local_workers(3, None, big) == 3
    assert local_workers(None, "tcp://127.0.0.1:8786", small) is None  # a shared cluster: kept


def test_the_first_look_sizes_local_json_files_and_directories_of_them(tmp_path):
    a = tmp_path / "instances_val2017.json"
    a.write_bytes(b"{}" * 10)
    folder = tmp_path / "annotations"
    (folder / "sub").mkdir(parents=True)
    (folder / "captions_val2017.json").write_bytes(b"{}")
    (folder / "sub" / "instances_train2017.json").write_bytes(b"{} ")
    (folder / "README").write_text("not a document")
    assert local_json_sizes([str(a)]) == [20]
    assert local_json_sizes([f"file://{a}"]) == [20]
    assert sorted(local_json_sizes([str(folder)])) == [2, 3]
    assert sorted(local_json_sizes([str(a), str(folder)])) == [2, 3, 20]
    gz = tmp_path / "instances_train2017.json.gz"
    gz.write_bytes(b"")
    zipped = tmp_path / "annotations.zip"
    zipfile.ZipFile(zipped, "w").close()
    for unknown in ([str(gz)], [str(zipped)], [str(a), "http://127.0.0.1:1/instances_val2017.json"],
                    [str(tmp_path / "*.json")], [str(tmp_path / "missing.json")]):
        assert local_json_sizes(unknown) is None, unknown
    (folder / "sub" / "deeper").mkdir()
    assert local_json_sizes([str(folder)]) is None  # deeper than the sources look
    shutil.rmtree(folder / "sub" / "deeper")
    (folder / "images.json.gz").write_bytes(b"")
    assert local_json_sizes([str(folder)]) is None
    os.remove(folder / "images.json.gz")
    for i in range(5):
        (folder / f"{i}.json").write_bytes(b"{}")
    assert local_json_sizes([str(folder)], most_files=4) is None  # a set of many files: not listed whole


def test_run_ingest_decides_on_the_resolved_sources(coco_mini, tmp_path):
    """An archive's member size is known only once resolved: a small one runs here too."""
    zipped = tmp_path / "annotations_trainval2017.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(coco_mini / "annotations" / "instances_val2017.json", "annotations/instances_val2017.json")
    report = run_ingest([str(zipped)], warehouse=str(tmp_path / "wh"), dataset="d")
    assert report.ran == "in this process"
    assert report.lines()[0].endswith("1 source file ingested in this process")


def _cocolake(*args, cwd) -> subprocess.CompletedProcess:
    exe = pathlib.Path(sys.executable).with_name("cocolake")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]
    return subprocess.run([*command, *args], cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_command_runs_a_small_input_here_and_a_large_one_on_the_default_cluster(coco_mini, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    small = src / "instances_val2017.json"
    shutil.copyfile(coco_mini / "annotations" / "instances_val2017.json", small)
    done = _cocolake("-v", "ingest", "--source", str(small), "--warehouse", "wh", "--dataset", "d", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith("1 source file ingested in this process"), done.stdout
    assert "distributed." not in done.stderr  # no scheduler, no worker: -v would show their logs
    here = done.stdout.splitlines()[1:]

    # the same records after as much trailing whitespace as takes it past the threshold
    large = src / "large" / "instances_val2017.json"
    large.parent.mkdir()
    large.write_bytes(small.read_bytes() + b" " * IN_PROCESS_BYTES)
    done = _cocolake("-v", "ingest", "--source", str(large), "--warehouse", "wh", "--dataset", "d", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    n = os.cpu_count() or 1
    where = "in this process" if n == 1 else f"on {n} local workers"
    assert done.stdout.splitlines()[0].endswith(f"1 source file ingested {where}"), done.stdout
    if n > 1:
        assert "distributed.scheduler" in done.stderr
    assert done.stdout.splitlines()[1:] == here  # the same counts either way

    done = _cocolake("ingest", "--source", str(large), "--warehouse", "wh", "--dataset", "d", "--workers", "1",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith("ingested in this process"), done.stdout


_COMMAND = """
import atexit, sys
atexit.register(lambda: print("pandas imported:", "pandas" in sys.modules))  # exit_now runs these
sys.argv = ["cocolake", *sys.argv[1:]]
from pipeline.cli import run
run()
"""


def test_the_ingest_command_runs_without_pandas_and_main_leaves_it_importable(coco_mini, tmp_path):
    """pyarrow imports pandas on its first conversion of a list (0.2-0.5 s): the command run
    in its own process converts without it; ``main``, called in-process, blocks nothing."""
    import importlib.util

    if importlib.util.find_spec("pandas") is None:
        pytest.skip("pandas is not installed: nothing could import it")
    src = coco_mini / "annotations" / "instances_val2017.json"
    done = subprocess.run([sys.executable, "-c", _COMMAND, "ingest", "--source", str(src), "--warehouse", "wh",
                           "--dataset", "d"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("ingested in this process") and lines[-1] == "pandas imported: False", done.stdout

    from pipeline.cli import main

    assert main(["ingest", "--source", str(src), "--warehouse", str(tmp_path / "wh2"), "--dataset", "d"]) == 0
    import pandas  # noqa: F401 - a library caller's process keeps it

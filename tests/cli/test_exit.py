"""How the ``cocolake`` command ends (``pipeline.cli.run``): with the exit status of ``main``,
its output flushed and the ``atexit`` handlers run, without the interpreter's teardown; while
a non-daemon thread still runs, the interpreter's own shutdown, which waits for it."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from pipeline.query.views import connect

ROOT = pathlib.Path(__file__).resolve().parents[2]

_PROGRAM = """
import atexit, sys, threading, time, weakref
from pipeline.cli import exit_now

class Held:
    pass

held = Held()
weakref.finalize(held, print, "finalizer ran", flush=True)
atexit.register(print, "handler ran")
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread ended"))).start()
print("buffered", end="")
sys.stderr.write("err")
exit_now(int(sys.argv[2]))
print("not reached")
"""


@pytest.mark.parametrize("thread", ["none", "thread"])
@pytest.mark.parametrize("code", [0, 3])
def test_exit_now_flushes_runs_the_handlers_and_keeps_the_status(thread, code):
    done = subprocess.run([sys.executable, "-c", _PROGRAM, thread, str(code)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == code, done.stderr
    assert done.stderr == "err"
    lines = done.stdout.splitlines()
    if thread == "thread":  # the interpreter's shutdown: the thread ends first
        assert lines == ["bufferedthread ended", "handler ran", "finalizer ran"]
    else:
        assert lines == ["bufferedhandler ran", "finalizer ran"]


def test_a_profiled_command_ends_as_usual_so_that_the_profiler_writes_its_results(tmp_path):
    out = tmp_path / "profile.out"
    # a command that returns (an error: no warehouse there), not one argparse ends
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "pipeline", "sql", "--warehouse",
                           str(tmp_path / "none"), "--dataset", "d", "SELECT 1"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "no warehouse here" in done.stderr, done.stderr  # (cProfile's own exit status is 0)
    import pstats

    assert pstats.Stats(str(out)).total_calls > 0


def test_the_command_delivers_all_its_output_through_a_pipe_and_its_status(mini_warehouse, tmp_path):
    exe = pathlib.Path(sys.executable).with_name("cocolake")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline"]
    wh, ds = mini_warehouse
    done = subprocess.run([*cmd, "sql", "--warehouse", wh, "--dataset", ds, "--format", "csv",
                           "SELECT id, rle_counts FROM raw_annotations ORDER BY id"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    con = connect(wh, ds)
    try:
        want = con.execute("SELECT count(*) FROM raw_annotations").fetchone()[0]
    finally:
        con.close()
    assert want > 500 and len(done.stdout.splitlines()) == want + 1  # the header and every row
    failed = subprocess.run([*cmd, "sql", "--warehouse", wh, "--dataset", ds, "SELECT * FROM no_such_view"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert failed.returncode == 1 and failed.stderr.startswith("cocolake sql: error: ")

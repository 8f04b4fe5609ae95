"""The ``cocolake`` command: one sub-module per sub-command.

Each module in ``COMMANDS`` exposes ``add_parser(subparsers)`` (registers its options) and
``run(args) -> int`` (the exit status). ``main(argv)`` is what tests call in-process;
``run()`` is the ``cocolake`` command itself (``main``, then ``exit_now``). Errors that are
``CocolakeError`` print as one line on stderr with exit status 1 (2 for usage errors), never
as a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
import threading

from ..errors import CocolakeError
from . import location

# sub-command name -> module under pipeline.cli
COMMANDS = {
    "synth": "synth",
    "ingest": "ingest",
    "export": "export",
    "merge": "merge",
    "ingest-results": "ingest_results",
    "evaluate": "evaluate",
    "sql": "sql",
    "views": "views",
    "query": "query",
    "check": "check",
    "report": "report",
    "vacuum": "vacuum",
}


def build_parser(commands: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The parser with ``commands`` (default: all); each one imports its module."""
    parser = argparse.ArgumentParser(
        prog="cocolake",
        description="COCO-format annotations as a columnar warehouse: ingest, SQL, export.",
        epilog="Every command that takes --warehouse and --dataset defaults them to the environment variables "
        "COCOLAKE_WAREHOUSE and COCOLAKE_DATASET, and also takes --config FILE; " + location.PRECEDENCE + ".",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        if commands is not None and name not in commands:
            continue
        mod = importlib.import_module(f"{__name__}.{module}")
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def _named_command(argv: list[str]) -> str | None:
    """The sub-command ``argv`` names (the first argument that is not an option), if known."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # NumPy's OpenBLAS starts a thread per core at import and they spin for a while; no
    # command does BLAS work, and on a small machine they take CPU from DuckDB (an export
    # of a small subset is 8% faster without them). Dask's workers set the same. A value
    # the user set is kept; it only takes effect before NumPy is first imported.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # only the named command's module is imported: some pull in heavy libraries, and a
    # short command (an export of a small subset) would spend most of its time on them
    command = _named_command(argv)
    parser = build_parser(None if command is None else (command,))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s" if not args.verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # quieten libraries that log per task
    for noisy in ("distributed", "fsspec", "asyncio", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not args.verbose else logging.INFO)
    try:
        return int(args._run(args) or 0)
    except CocolakeError as err:
        print(f"cocolake {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cocolake {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    """The ``cocolake`` command (and ``python -m pipeline``): ``main``, then ``exit_now``.

    ``cocolake ingest`` runs as without pandas (``ingest.nopandas``): a run in this process
    converts Python lists with pyarrow, which would import it first (0.2-0.5 s). Here, not
    in ``main``: a process that calls ``main`` may go on to use pandas.
    """
    if _named_command(sys.argv[1:]) == "ingest":
        from ..ingest import nopandas

        nopandas.block()
    exit_now(main())


def exit_now(code: int) -> None:
    """End the process with ``code`` once the exit handlers have run, without the interpreter's
    teardown of every module and object.

    With NumPy, pyarrow, pandas, Dask and distributed imported, that teardown takes 0.25-0.3 s
    (of a 1.3 s ingest of coco-mini) and does nothing a finished command needs: the output
    streams are flushed here, and the ``atexit`` handlers still run (logging's flush,
    multiprocessing's, ``weakref.finalize`` clean-ups such as temporary directories). While a
    thread other than daemons is still running, the interpreter's own shutdown (which waits
    for it) ends the process instead; so it does under a profiler or tracer (``python -m
    cProfile -m pipeline ...``, coverage), which writes its results after the program.
    """
    busy = any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate())
    if busy or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    _flush()
    atexit._run_exitfuncs()
    _flush()
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that has gone (a closed pipe), a closed stream
            pass


if __name__ == "__main__":  # pragma: no cover
    run()

"""cases: what a benchmark case is, and how its commands are measured.

A case (one module here: ``ingest``, ``queries``, ``export``, ``scaling``, ``stages``)
exposes ``run(bench) -> CaseResult``. It builds ``Command`` records (whole-process
commands: a baseline script or the ``cocolake`` CLI), hands them to ``Bench.measure_all``,
which runs each of them ``bench.runs`` times, interleaved (baseline, cocolake, baseline,
...) so that load from elsewhere on the machine spreads over both, and keeps the median
and the spread (min-max) of wall time, CPU time and peak process-tree memory.

A command that cannot run here (a sub-command not in this version of cocolake) is
reported as "not available" with the reason; a command that fails is reported as failed
with its log file; neither stops the other cases.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable

from ..treemem import Measurement, measure

ROOT = pathlib.Path(__file__).resolve().parents[2]
GB = 1 << 30
MB = 1 << 20


@dataclasses.dataclass
class Command:
    name: str  # unique key within a run of the harness, e.g. "ingest.cocolake.w2"
    label: str  # what the tables call it
    argv: list[str]
    before: Callable[[], None] | None = None  # untimed setup before every run (e.g. clear the output)
    unavailable: str | None = None  # why it cannot run here (then it is not run)


@dataclasses.dataclass
class Stats:
    """The runs of one command: median and min-max of each measure, or why there are none."""

    label: str
    command: str  # as a person would type it, from the project root
    runs: list[Measurement] = dataclasses.field(default_factory=list)
    problem: str | None = None  # "not available: ..." or "failed: ..."

    @property
    def ok(self) -> bool:
        return self.problem is None and bool(self.runs)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(m, attr) for m in self.runs)

    def spread(self, attr: str) -> tuple[float, float]:
        values = [getattr(m, attr) for m in self.runs]
        return min(values), max(values)

    def to_json(self) -> dict:
        return {"label": self.label, "command": self.command, "problem": self.problem,
                "runs": [m.to_json() for m in self.runs]}


@dataclasses.dataclass
class Comparison:
    """A row of the main table: a cocolake command against a baseline command."""

    label: str
    baseline: str  # Command.name
    cocolake: str  # Command.name


@dataclasses.dataclass
class CaseResult:
    key: str  # the case name: ingest, queries, ...
    title: str
    stats: dict[str, Stats] = dataclasses.field(default_factory=dict)
    comparisons: list[Comparison] = dataclasses.field(default_factory=list)
    # further Markdown (a case's own tables, target checks, notes)
    extra: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


class Bench:
    """Where things are and how many runs: what every case receives."""

    def __init__(self, *, quick: bool, runs: int, data_dir: pathlib.Path, timeout: float = 3600.0):
        self.quick = quick
        self.runs = runs
        self.data = data_dir
        self.work = data_dir / "scratch"
        self.logs = data_dir / "logs"
        self.timeout = timeout
        self.python = sys.executable
        self.cocolake = str(pathlib.Path(sys.executable).with_name("cocolake"))
        self.inputs: dict[int, pathlib.Path] = {}  # images -> scaled input file
        self.used: set[int] = set()  # the inputs (images) the current case used
        self.base_images = 10_000 if quick else 118_287
        self.input_for: Callable[[int], pathlib.Path] | None = None  # set by run.py
        self.results: dict[str, CaseResult] = {}  # cases already run in this invocation
        self._warehouse: pathlib.Path | None = None
        self._subcommands: dict[str, str | None] = {}
        for d in (self.work, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ inputs

    def input(self, images: int | None = None) -> pathlib.Path:
        images = images or self.base_images
        self.used.add(images)
        if images not in self.inputs:
            self.inputs[images] = self.input_for(images)
        return self.inputs[images]

    def rel(self, path) -> str:
        """A path as seen from the project root (commands run there)."""
        p = pathlib.Path(path)
        try:
            return str(p.resolve().relative_to(ROOT))
        except ValueError:
            return os.path.relpath(p, ROOT)

    def warm(self, path) -> None:
        """Read a file once so that every run finds it in the page cache."""
        with open(path, "rb") as f:
            while f.read(16 * MB):
                pass

    # ------------------------------------------------------------------ commands

    def shown(self, argv: list[str]) -> str:
        out = []
        for i, a in enumerate(argv):
            if i == 0 and a == self.python:
                a = "python"
            elif i == 0 and a == self.cocolake:
                a = "cocolake"
            out.append(quote(a))
        return " ".join(out)

    def subcommand_problem(self, name: str) -> str | None:
        """None when ``cocolake NAME`` exists in this version, else why not."""
        if name not in self._subcommands:
            r = subprocess.run([self.cocolake, name, "--help"], cwd=ROOT, capture_output=True, text=True)
            self._subcommands[name] = None if r.returncode == 0 else f"`cocolake {name}` is not in this version"
        return self._subcommands[name]

    def clear(self, *paths) -> Callable[[], None]:
        def run() -> None:
            for p in paths:
                shutil.rmtree(p, ignore_errors=True)
        return run

    def ingest_argv(self, source, warehouse, workers: int) -> list[str]:
        return [self.cocolake, "ingest", "--source", self.rel(source), "--warehouse", self.rel(warehouse),
                "--dataset", "bench", "--workers", str(workers)]

    def measure_all(self, commands: list[Command], runs: int | None = None) -> dict[str, Stats]:
        runs = runs or self.runs
        stats = {c.name: Stats(c.label, self.shown(c.argv), problem=f"not available: {c.unavailable}"
                               if c.unavailable else None) for c in commands}
        for r in range(runs):
            for c in commands:
                s = stats[c.name]
                if s.problem:
                    continue
                if c.before:
                    c.before()
                log = self.logs / f"{c.name}.run{r + 1}.log"
                print(f"  {c.label} (run {r + 1}/{runs}): {s.command}", flush=True)
                with open(log, "wb") as out:
                    m = measure(c.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=self.timeout)
                if not m.ok:
                    why = "timed out" if m.timed_out else f"exit status {m.returncode}"
                    s.problem = f"failed ({why}; {self.last_line(log)}; log: {self.rel(log)})"
                    print(f"    {s.problem}", flush=True)
                    continue
                s.runs.append(m)
                print(f"    {m.wall_s:.2f} s, peak {m.peak_bytes / GB:.2f} GB, CPU {m.cpu_s:.1f} s", flush=True)
        return stats

    @staticmethod
    def last_line(log: pathlib.Path) -> str:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        text = lines[-1] if lines else "no output"
        return text if len(text) <= 160 else text[:157] + "..."

    # ------------------------------------------------------------------ the shared warehouse

    def adopt_warehouse(self, path: pathlib.Path) -> None:
        """Use an ingest the ingest case already made for the queries and the export."""
        self._warehouse = path

    def warehouse(self) -> pathlib.Path:
        """A warehouse with the base input as dataset ``bench`` (ingested once, untimed)."""
        if self._warehouse is None or not (self._warehouse / "bench" / "_manifest.json").is_file():
            path = self.work / "wh-shared"
            shutil.rmtree(path, ignore_errors=True)
            argv = self.ingest_argv(self.input(), path, 2)
            print(f"  preparing the warehouse (untimed): {self.shown(argv)}", flush=True)
            log = self.logs / "prepare-warehouse.log"
            with open(log, "wb") as out:
                r = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                raise RuntimeError(f"ingest for the shared warehouse failed: {self.last_line(log)}")
            self._warehouse = path
        return self._warehouse

    def python_json(self, argv: list[str], log_name: str) -> dict:
        """Run a helper process that prints one JSON object as its last stdout line."""
        log = self.logs / log_name
        print(f"  {self.shown(argv)}", flush=True)
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=self.timeout)
        log.write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError(f"{self.shown(argv)} failed: {self.last_line(log)} (log: {self.rel(log)})")
        return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- formatting


def quote(arg: str) -> str:
    """Shell quoting that stays readable for SQL: "category_name = 'giraffe'"."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def fmt_s(stats: Stats, attr: str = "wall_s") -> str:
    if not stats.ok:
        return stats.problem or "no runs"
    med = stats.median(attr)
    if len(stats.runs) == 1:
        return f"{med:.2f} s"
    lo, hi = stats.spread(attr)
    return f"{med:.2f} s ({lo:.2f}–{hi:.2f})"


def fmt_mem(stats: Stats) -> str:
    if not stats.ok:
        return "—"
    med = stats.median("peak_bytes") / GB
    if len(stats.runs) == 1:
        return f"{med:.2f} GB"
    lo, hi = (v / GB for v in stats.spread("peak_bytes"))
    return f"{med:.2f} GB ({lo:.2f}–{hi:.2f})"


def ratio(a: Stats, b: Stats, attr: str) -> float | None:
    if not (a.ok and b.ok) or b.median(attr) <= 0:
        return None
    return a.median(attr) / b.median(attr)


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}×"


"""The benchmark harness: ``make bench``, or ``python -m benchmarks.run [--quick] [--cases a,b] [--runs N]``.

Builds the train2017-scale input once with ``../shared/bench/make_scaled.py`` (cached in
``benchmarks/data/``, git-ignored), runs the cases of ``benchmarks/cases`` (each command
a whole process, measured with ``benchmarks.treemem``), and rewrites its own section of
``benchmarks/RESULTS.md``: the part between ``<!-- bench:begin -->`` and
``<!-- bench:end -->``. Inside it, each case of each mode (full size or ``--quick``) is a
block of its own, so a run replaces only the blocks it measured; the rest of the file
belongs to whoever wrote it. The raw numbers go to ``benchmarks/data/results-<mode>.json``.

``--quick``: 1 run, a 10,000-image input (scaling: 5,000 / 10,000 / 20,000), for
developing; the targets are defined on the full-size input.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time
import traceback

import psutil

from .cases import GB, MB, ROOT, Bench, CaseResult, fmt_mem, fmt_ratio, fmt_s, quote, ratio

CASES = ("ingest", "queries", "export", "scaling", "stages")
DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MAKE_SCALED = ROOT.parent / "shared" / "bench" / "make_scaled.py"
SAMPLES = ROOT.parent / "shared" / "data" / "coco-mini" / "annotations"
PACKAGES = ("cocolake", "pycocotools", "duckdb", "dask", "distributed", "pyarrow", "numpy", "orjson", "psutil")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
BLOCK = re.compile(r"<!-- bench:case (\S+) -->\n(.*?)<!-- bench:case-end -->\n?", re.S)


# ---------------------------------------------------------------------------- inputs


def input_path(images: int) -> pathlib.Path:
    name = "scaled_train2017.json" if images == 118_287 else f"scaled-{images}_train2017.json"
    return DATA / name


def ensure_input(images: int) -> pathlib.Path:
    """The scaled instances file with ``images`` images, built once (atomically) and cached."""
    path = input_path(images)
    if path.is_file():
        return path
    sources = sorted(SAMPLES.glob("instances_*.json"))
    if not MAKE_SCALED.is_file() or not sources:
        sys.exit(f"cannot build {rel(path)}: needs {rel(MAKE_SCALED)} and {rel(SAMPLES)}/instances_*.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    argv = [sys.executable, rel(MAKE_SCALED), rel(tmp), str(images), *map(rel, sources)]
    print(f"building the input once: python {' '.join(argv[1:])}", flush=True)
    subprocess.run(argv, cwd=ROOT, check=True)
    os.replace(tmp, path)
    return path


def rel(path) -> str:
    return os.path.relpath(path, ROOT)


_described: dict[pathlib.Path, str] = {}


def describe_input(images: int, path: pathlib.Path) -> str:
    """Size, images and annotations of a scaled file (annotations counted by their key)."""
    if path not in _described:
        key, anns, tail = b'"image_id"', 0, b""
        with open(path, "rb") as f:
            while block := f.read(16 * MB):
                buf = tail + block
                anns += buf.count(key)
                tail = buf[1 - len(key):]  # too short to hold a whole key: nothing counted twice
        _described[path] = f"`{rel(path)}`: {path.stat().st_size / MB:.0f} MB, {images} images, {anns} annotations"
    return _described[path]


# ---------------------------------------------------------------------------- the machine


def machine() -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": psutil.virtual_memory().total / GB,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": versions,
        "commit": git_state(),
    }


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pipeline", "sql"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted changes in pipeline/ or sql/" if dirty else head


def machine_line(m: dict) -> str:
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return (f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']:.1f} GB RAM, {m['os']}, Python {m['python']}; {pk}; "
            f"code at {m['commit']}")


# ---------------------------------------------------------------------------- RESULTS.md


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_case(res: CaseResult, mode: str, runs: int, command: str, env: dict, inputs: str,
                load: tuple[float, float]) -> str:
    size = "--quick input" if mode == "quick" else "full size"
    lines = [f"### {res.title} ({size}, {runs} run{'s' * (runs > 1)})", "",
             f"Reproduce: `{command}` — measured {env['date']}, {res.seconds:.0f} s; "
             f"load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end.  ",
             f"Machine: {machine_line(env['machine'])}.  ", f"Input: {inputs}.", ""]
    cores = env["machine"]["cores"] or 1
    if max(load) > cores:
        lines += [f"The machine was busy (load average up to {max(load):.1f} on {cores} cores): wall times "
                  "are inflated and noisy; the CPU times are the steadier figure.", ""]
    if res.comparisons:
        lines += ["| case | baseline | cocolake | speed-up (baseline ÷ cocolake) | baseline memory | cocolake memory | "
                  "memory (cocolake/baseline) |", "|---|---|---|---|---|---|---|"]
        for c in res.comparisons:
            b, k = res.stats[c.baseline], res.stats[c.cocolake]
            mem = ratio(k, b, "peak_bytes")
            lines.append(f"| {c.label} | {_cell(fmt_s(b))} | {_cell(fmt_s(k))} | "
                         f"{fmt_ratio(ratio(b, k, 'wall_s'))} | {fmt_mem(b)} | {fmt_mem(k)} | "
                         f"{'—' if mem is None else f'{mem:.2f}'} |")
        lines.append("")
    if res.stats and res.key != "scaling":
        lines += ["Every command (wall time: median (min–max); CPU: user + system of the whole tree, "
                  "workers that finish after the command exits included; "
                  "memory: peak RSS of the whole process tree, sampled every 20 ms):", "",
                  "| command | wall | CPU | peak tree memory | processes | command line |",
                  "|---|---|---|---|---|---|"]
        seen = set()
        for s in res.stats.values():
            if id(s) in seen:
                continue
            seen.add(id(s))
            procs = max((m.max_processes for m in s.runs), default=0)
            lines.append(f"| {s.label} | {_cell(fmt_s(s))} | {_cell(fmt_s(s, 'cpu_s')) if s.ok else '—'} | "
                         f"{fmt_mem(s)} | {procs or '—'} | `{_cell(s.command)}` |")
    lines += res.extra
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip() + "\n"


def write_results(path: pathlib.Path, blocks: dict[str, str]) -> None:
    """Replace our blocks inside our section; leave everything outside the section alone."""
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        body, tail = rest.split(END, 1)
    else:
        head, body, tail = text.rstrip() + "\n\n", "", "\n"
    old = {m.group(1): m.group(2) for m in BLOCK.finditer(body)}
    old.update(blocks)
    order = [f"{mode}/{case}" for mode in ("full", "quick") for case in CASES]
    keys = [k for k in order if k in old] + sorted(k for k in old if k not in order)
    out = [BEGIN, "## cocolake against pycocotools", "",
           "Generated by `make bench` (`python -m benchmarks.run`; `--quick` for the small input). "
           "Each block is replaced when its case runs again; edit `benchmarks/`, not this section.", ""]
    for k in keys:
        out += [f"<!-- bench:case {k} -->", old[k].rstrip() + "\n", "<!-- bench:case-end -->"]
    path.write_text(head + "\n".join(out) + "\n" + END + tail)


# ---------------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 run and a 10,000-image input (for development)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--runs", type=int, help="runs per command (default 3; 1 with --quick)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before a command is killed")
    p.add_argument("--results", type=pathlib.Path, default=RESULTS, help="the Markdown file to update")
    args = p.parse_args(argv)
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.case_list if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    args.runs = args.runs or (1 if args.quick else 3)
    return args


def user_environment() -> None:
    """Measure the commands as users run them: with Python's bytecode caches.

    A shell that sets ``PYTHONDONTWRITEBYTECODE`` (some containers and CI images do)
    makes every measured command compile the package's modules again, tens of
    milliseconds that an installed package never pays; the harness drops it for its
    children and compiles the package once before the first run.
    """
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        print("PYTHONDONTWRITEBYTECODE is unset for the measured commands", flush=True)
    import compileall

    compileall.compile_dir(str(ROOT / "pipeline"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    user_environment()
    mode = "quick" if args.quick else "full"
    command = " ".join(["python -m benchmarks.run", *map(quote, argv)])
    bench = Bench(quick=args.quick, runs=args.runs, data_dir=DATA, timeout=args.timeout)
    bench.input_for = ensure_input
    env = {"machine": machine()}
    print(f"machine: {machine_line(env['machine'])}", flush=True)
    raw_path = DATA / f"results-{mode}.json"
    raw = json.loads(raw_path.read_text()) if raw_path.is_file() else {}
    failed = 0
    for case in args.case_list:
        print(f"== {case} ({mode}, {args.runs} run(s))", flush=True)
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        env["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        bench.used = set()
        try:
            res = importlib.import_module(f"benchmarks.cases.{case}").run(bench)
        except Exception as err:  # a broken case must not lose the others' results
            traceback.print_exc()
            res = CaseResult(case, case, extra=["", f"The case failed: {type(err).__name__}: {err}"])
            failed += 1
        res.seconds = time.perf_counter() - t0
        bench.results[case] = res
        inputs = "; ".join(describe_input(n, bench.inputs[n]) for n in sorted(bench.used) if n in bench.inputs)
        block = render_case(res, mode, args.runs, command, env, inputs, (load0, os.getloadavg()[0]))
        write_results(args.results, {f"{mode}/{case}": block})
        raw[case] = {"command": command, "env": env, "seconds": res.seconds,
                     "stats": {k: s.to_json() for k, s in res.stats.items()}, "extra": res.extra}
        raw_path.write_text(json.dumps(raw, indent=1))
        print(block, flush=True)
    print(f"results: {rel(args.results)} (raw numbers: {rel(raw_path)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

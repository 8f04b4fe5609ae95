"""The package layout: no import cycle in pipeline/, the shared core imports no stage
package, and the modules of the restructured packages stay small enough to read.

Imports are read from the source (every ``import`` and ``from ... import``, also those
inside functions), so a cycle that only closes at run time is found too.
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pipeline"

# the shared core: imports nothing of cocolake but each other
CORE = {"pipeline.errors", "pipeline.defaults", "pipeline.config", "pipeline.schema", "pipeline.jsontext",
        "pipeline.warehouse", "pipeline.manifest", "pipeline.masks", "pipeline.iou", "pipeline.rle", "pipeline.id_types",
        "pipeline.rlekernel", "pipeline.writerlock"}

MAX_LINES = 450


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The pipeline modules ``name`` imports (``from . import x`` counts as module ``x``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import mod`` imports the module; ``from mod import name`` the module
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = [t for t in subs if t in known]
            if len(targets) < len(subs):
                targets.append(base)
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # importing a.b runs a's __init__ first; that is no dependency of the importing code,
    # so only what is written counts
    return {name: imports(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_function_level_imports():
    g = graph()
    # views imports the mask functions only when a connection needs them
    assert "pipeline.query.functions" in g["pipeline.query.views"]
    assert "pipeline.query.sqlfiles" in g["pipeline.query.functions"]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_core_imports_no_package_module():
    g = graph()
    upward = {name: sorted(g[name] - CORE - {"pipeline"}) for name in CORE if name in g}
    assert {k: v for k, v in upward.items() if v} == {}


def test_modules_of_the_restructured_packages_are_small():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_error_class_is_in_errors_and_importable_where_it_was():
    from pipeline import errors, masks, merge
    from pipeline.export import ExportError

    assert masks.InvalidMask is errors.InvalidMask
    assert ExportError is errors.ExportError
    assert merge.MergeError is errors.MergeError
    defined = {name for name, path in modules().items()
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "").endswith(("Error", "InvalidMask"))
                                                         for b in node.bases)}
    assert defined == {"pipeline.errors"}

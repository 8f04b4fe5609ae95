"""Export: the ``giraffe`` subset as COCO JSON, without images.

``cocolake export --where "category_name = 'giraffe'" --format coco --images none --out D``
against ``benchmarks/baselines/pycoco_export.py`` (``COCO()``, ``getCatIds``,
``getImgIds``, ``loadImgs``, ``getAnnIds``, ``loadAnns``, ``json.dump``). Both write a
fresh output directory every run.
"""

from __future__ import annotations

import json
import pathlib

from . import Bench, CaseResult, Command, Comparison, ratio

TARGET_SPEEDUP = 30.0
TARGET_SECONDS = 1.0  # cocolake's whole process, median wall time
CATEGORY = "giraffe"


def run(bench: Bench) -> CaseResult:
    source = bench.input()
    result = CaseResult("export", f"Export ({CATEGORY}, COCO JSON, no images)")
    problem = bench.subcommand_problem("export")
    try:
        wh = bench.warehouse()
    except RuntimeError as err:
        result.extra += ["", f"Not measured: {err}"]
        return result
    bench.warm(source)
    out_base, out_cl = bench.work / "export-pycocotools", bench.work / "export-cocolake"
    commands = [
        Command("export.pycocotools", "pycocotools script",
                [bench.python, "benchmarks/baselines/pycoco_export.py", bench.rel(source), bench.rel(out_base),
                 CATEGORY], before=bench.clear(out_base)),
        Command("export.cocolake", "cocolake export",
                [bench.cocolake, "export", "--warehouse", bench.rel(wh), "--dataset", "bench",
                 "--where", f"category_name = '{CATEGORY}'", "--format", "coco", "--images", "none",
                 "--out", bench.rel(out_cl)], before=bench.clear(out_cl), unavailable=problem),
    ]
    result.stats = bench.measure_all(commands)
    result.comparisons.append(Comparison(f"export {CATEGORY} subset", "export.pycocotools", "export.cocolake"))
    result.extra += same_subset(out_base, out_cl)
    speed = ratio(result.stats["export.pycocotools"], result.stats["export.cocolake"], "wall_s")
    if speed is not None:
        wall = result.stats["export.cocolake"].median("wall_s")
        result.extra += ["", f"Target ≥ {TARGET_SPEEDUP:.0f}× faster than the pycocotools script: "
                             f"{speed:.1f}× ({'met' if speed >= TARGET_SPEEDUP else 'not met'}); "
                             f"under {TARGET_SECONDS:.0f} s: {wall:.2f} s "
                             f"({'met' if wall < TARGET_SECONDS else 'not met'})."]
    return result


def same_subset(base: pathlib.Path, ours: pathlib.Path) -> list[str]:
    """Whether both outputs hold the same records: the two must have done the same work.

    Images and annotations are compared record for record, keyed by id (pycocotools lists
    them in its index order, cocolake in the source order); ``info`` and ``licenses`` must be
    equal; pycocotools' categories (the selected ones) must be among cocolake's (every
    category of the source file, so that ids keep their meaning).
    """
    docs = []
    for d in (base, ours):
        files = sorted(pathlib.Path(d).rglob("*.json"))
        if len(files) != 1:
            return ["", f"Outputs not compared: {d} holds {len(files)} JSON files, expected 1."]
        docs.append(json.loads(files[0].read_text()))
    theirs, mine = docs
    problems = []
    for key in ("images", "annotations"):
        a = {r["id"]: r for r in theirs.get(key) or []}
        b = {r["id"]: r for r in mine.get(key) or []}
        if a != b:
            differ = sum(1 for i in a.keys() & b.keys() if a[i] != b[i])
            problems.append(f"{key}: {len(a.keys() - b.keys())} only in pycocotools', {len(b.keys() - a.keys())} "
                            f"only in cocolake's, {differ} differ")
    for key in ("info", "licenses"):
        if theirs.get(key) != mine.get(key):
            problems.append(f"{key} differ")
    if any(c not in (mine.get("categories") or []) for c in theirs.get("categories") or []):
        problems.append("a category of pycocotools' output is not in cocolake's")
    shown = f"{len(theirs.get('images') or [])} images, {len(theirs.get('annotations') or [])} annotations"
    if problems:
        return ["", f"Outputs DIFFER ({shown} from pycocotools): {'; '.join(problems)}."]
    return ["", f"Outputs: the same {shown}, record for record (compared by id; info and licenses equal)."]

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
        result.extra += ["", f"Target ≥ {TARGET_SPEEDUP:.0f}× faster than the pycocotools script: "
                             f"{speed:.1f}× ({'met' if speed >= TARGET_SPEEDUP else 'not met'})."]
    return result


def same_subset(*dirs: pathlib.Path) -> list[str]:
    """Images and annotations each output holds: the two must have done the same work."""
    counts = []
    for d in dirs:
        files = sorted(pathlib.Path(d).rglob("*.json"))
        if not files:
            return []
        n_img = n_ann = 0
        for f in files:
            data = json.loads(f.read_text())
            n_img += len(data.get("images") or [])
            n_ann += len(data.get("annotations") or [])
        counts.append((n_img, n_ann))
    same = "the same subset" if len(set(counts)) == 1 else "DIFFERENT subsets"
    shown = "; ".join(f"{i} images, {a} annotations" for i, a in counts)
    return ["", f"Outputs (pycocotools; cocolake): {shown}: {same}."]

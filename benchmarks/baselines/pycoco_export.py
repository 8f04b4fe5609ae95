"""Baseline for export: one category's subset as COCO JSON, the pycocotools way.

``COCO()`` loads the document, ``getCatIds`` / ``getImgIds`` / ``getAnnIds`` select, and
``loadImgs`` / ``loadAnns`` / ``json.dump`` write the images holding the category and the
category's annotations on them.

usage: python benchmarks/baselines/pycoco_export.py INSTANCES.json OUT_DIR [CATEGORY_NAME]
"""

import json
import os
import sys

from pycocotools.coco import COCO


def main(path: str, out_dir: str, name: str = "giraffe") -> None:
    coco = COCO(path)
    cat_ids = coco.getCatIds(catNms=[name])
    img_ids = coco.getImgIds(catIds=cat_ids)
    imgs = coco.loadImgs(img_ids)
    ann_ids = coco.getAnnIds(imgIds=img_ids, catIds=cat_ids)
    anns = coco.loadAnns(ann_ids)
    subset = {
        "info": coco.dataset.get("info"),
        "licenses": coco.dataset.get("licenses", []),
        "images": imgs,
        "annotations": anns,
        "categories": coco.loadCats(cat_ids),
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"instances_{name}.json"), "w") as f:
        json.dump(subset, f)
    print(f"{len(imgs)} images, {len(anns)} annotations")


if __name__ == "__main__":
    main(*sys.argv[1:])

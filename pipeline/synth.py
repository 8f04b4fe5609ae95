"""synth: a small synthetic dataset shaped like MS COCO 2017, for demos and tests.

Input: an output directory, a number of images and a seed.
Output, under that directory::

    annotations/instances_{train,val}2017.json         80 thing categories, polygons + crowd RLE
    annotations/person_keypoints_{train,val}2017.json  person annotations with 17 keypoints
    annotations/captions_{train,val}2017.json          ~5 captions per image
    annotations/stuff_{train,val}2017.json             stuff categories 92..183, compressed RLE
    annotations/image_info_test2017.json               test images, no annotations
    {train,val,test}2017/%012d.jpg                      small real JPEGs
    .cocolake-synth.json                               parameters and summary, written last

Guarantees: the same (images, seed) give byte-identical files. The JSON is compact, UTF-8
(captions include non-ASCII text, quotes and backslashes) and follows the real files'
structure and key order: real category ids (1..90 with gaps), licences 1..8, crowd ids
built like COCO's (``9`` + category + image id), polygons with several parts and float
coordinates (some partly outside the image; ``bbox`` is the vertex extent clipped to the
image), crowd annotations as uncompressed RLE, stuff as compressed RLE strings whose
``other`` (183) covers the thing pixels. Keypoint annotations reuse the person instance
ids. The first image of each split has a crowd annotation; the last train image has no
instance annotation at all. As in COCO, test images carry no ``flickr_url``.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from .errors import ConfigError

log = logging.getLogger(__name__)

MARKER = ".cocolake-synth.json"
_VERSION = 1  # bump when the output changes, so ensure_generated() regenerates

_THINGS = (
    ("person", "1 person"),
    ("vehicle", "2 bicycle, 3 car, 4 motorcycle, 5 airplane, 6 bus, 7 train, 8 truck, 9 boat"),
    ("outdoor", "10 traffic light, 11 fire hydrant, 13 stop sign, 14 parking meter, 15 bench"),
    ("animal", "16 bird, 17 cat, 18 dog, 19 horse, 20 sheep, 21 cow, 22 elephant, 23 bear, 24 zebra, 25 giraffe"),
    ("accessory", "27 backpack, 28 umbrella, 31 handbag, 32 tie, 33 suitcase"),
    ("sports", "34 frisbee, 35 skis, 36 snowboard, 37 sports ball, 38 kite, 39 baseball bat, "
               "40 baseball glove, 41 skateboard, 42 surfboard, 43 tennis racket"),
    ("kitchen", "44 bottle, 46 wine glass, 47 cup, 48 fork, 49 knife, 50 spoon, 51 bowl"),
    ("food", "52 banana, 53 apple, 54 sandwich, 55 orange, 56 broccoli, 57 carrot, 58 hot dog, "
             "59 pizza, 60 donut, 61 cake"),
    ("furniture", "62 chair, 63 couch, 64 potted plant, 65 bed, 67 dining table, 70 toilet"),
    ("electronic", "72 tv, 73 laptop, 74 mouse, 75 remote, 76 keyboard, 77 cell phone"),
    ("appliance", "78 microwave, 79 oven, 80 toaster, 81 sink, 82 refrigerator"),
    ("indoor", "84 book, 85 clock, 86 vase, 87 scissors, 88 teddy bear, 89 hair drier, 90 toothbrush"),
)

# id name supercategory, as in stuff_*2017.json
_STUFF = """
92 banner textile|93 blanket textile|94 branch plant|95 bridge building|96 building-other building
97 bush plant|98 cabinet furniture-stuff|99 cage structural|100 cardboard raw-material|101 carpet floor
102 ceiling-other ceiling|103 ceiling-tile ceiling|104 cloth textile|105 clothes textile|106 clouds sky
107 counter furniture-stuff|108 cupboard furniture-stuff|109 curtain textile|110 desk-stuff furniture-stuff
111 dirt ground|112 door-stuff furniture-stuff|113 fence structural|114 floor-marble floor
115 floor-other floor|116 floor-stone floor|117 floor-tile floor|118 floor-wood floor|119 flower plant
120 fog water|121 food-other food-stuff|122 fruit food-stuff|123 furniture-other furniture-stuff
124 grass plant|125 gravel ground|126 ground-other ground|127 hill solid|128 house building
129 leaves plant|130 light furniture-stuff|131 mat textile|132 metal raw-material
133 mirror-stuff furniture-stuff|134 moss plant|135 mountain solid|136 mud ground|137 napkin textile
138 net structural|139 paper raw-material|140 pavement ground|141 pillow textile|142 plant-other plant
143 plastic raw-material|144 platform ground|145 playingfield ground|146 railing structural
147 railroad ground|148 river water|149 road ground|150 rock solid|151 roof building|152 rug textile
153 salad food-stuff|154 sand ground|155 sea water|156 shelf furniture-stuff|157 sky-other sky
158 skyscraper building|159 snow ground|160 solid-other solid|161 stairs furniture-stuff|162 stone solid
163 straw plant|164 structural-other structural|165 table furniture-stuff|166 tent building
167 textile-other textile|168 towel textile|169 tree plant|170 vegetable food-stuff|171 wall-brick wall
172 wall-concrete wall|173 wall-other wall|174 wall-panel wall|175 wall-stone wall|176 wall-tile wall
177 wall-wood wall|178 water-other water|179 waterdrops water|180 window-blind window
181 window-other window|182 wood solid|183 other other
"""

KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
            [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]

_LICENSES = (
    ("http://creativecommons.org/licenses/by-nc-sa/2.0/", "Attribution-NonCommercial-ShareAlike License"),
    ("http://creativecommons.org/licenses/by-nc/2.0/", "Attribution-NonCommercial License"),
    ("http://creativecommons.org/licenses/by-nc-nd/2.0/", "Attribution-NonCommercial-NoDerivs License"),
    ("http://creativecommons.org/licenses/by/2.0/", "Attribution License"),
    ("http://creativecommons.org/licenses/by-sa/2.0/", "Attribution-ShareAlike License"),
    ("http://creativecommons.org/licenses/by-nd/2.0/", "Attribution-NoDerivs License"),
    ("http://flickr.com/commons/usage/", "No known copyright restrictions"),
    ("http://www.usa.gov/copyright.shtml", "United States Government Work"),
)

_CAPTIONS = (
    "A {a} {n} in the middle of the picture.",
    "A close up of a {a} {n} next to a {m}.",
    "There is a {n} and a {m} in this photo.",
    "an image of a {n} near some {m}",
    "A {n} sitting on top of a {m}. ",
    "Someone has placed a {n} beside the {m}.",
    "A photo with a {n}, seen from far away.",
)
# every few captions: non-ASCII text, escaped characters, an astral-plane emoji
_ODD_CAPTIONS = (
    "A {n} outside a caf\u00e9 in Z\u00fcrich, cr\u00e8me br\u00fbl\u00e9e on the table.",
    "Ein {n} steht \u00fcber der Stra\u00dfe.",
    "\u732b\u304c\u30bd\u30d5\u30a1\u306e\u4e0a\u3067\u5bdd\u3066\u3044\u308b ({n}).",
    'A sign that reads "NO {N}S" \\ beside a {m}.',
    "A {n} and a slice of pizza \U0001f355 on a plate.",
    "Tab\tseparated caption about a {n}.",
)
_ADJECTIVES = ("small", "large", "red", "blue", "old", "shiny", "striped", "wooden")


def _parse_things() -> list[dict]:
    cats = []
    for supercategory, items in _THINGS:
        for item in items.split(", "):
            cid, name = item.split(" ", 1)
            cats.append({"supercategory": supercategory, "id": int(cid), "name": name})
    return cats


def _parse_stuff() -> list[dict]:
    cats = []
    for item in _STUFF.replace("\n", "|").split("|"):
        if item.strip():
            cid, name, supercategory = item.split()
            cats.append({"supercategory": supercategory, "id": int(cid), "name": name})
    return cats


THING_CATEGORIES = _parse_things()
STUFF_CATEGORIES = _parse_stuff()
_CAT_NAME = {c["id"]: c["name"] for c in THING_CATEGORIES}
_CAT_IDS = np.array([c["id"] for c in THING_CATEGORIES])
_CAT_WEIGHTS = np.array([25.0 if c["id"] == 1 else 1.0 for c in THING_CATEGORIES])
_CAT_WEIGHTS /= _CAT_WEIGHTS.sum()


def generate(out: str | Path, images: int = 40, seed: int = 0) -> dict:
    """Write the dataset under ``out`` (see the module docstring); returns a summary."""
    with warnings.catch_warnings():
        # pycocotools 2.0.x decode() under NumPy 2 warns on every call about __array__(copy=)
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return _generate(Path(out), images, seed)


def _generate(out: Path, images: int, seed: int) -> dict:
    if images < 2:
        raise ConfigError(f"synth: images={images}: need at least 2 (one train and one val image)")
    _prepare(out)
    rng = np.random.default_rng(seed)
    n_train = max(1, round(images * 0.8))
    n_train = min(n_train, images - 1)
    counts = {"train2017": n_train, "val2017": images - n_train, "test2017": max(2, images // 20)}
    ids = (rng.choice(581_929, size=sum(counts.values()), replace=False) + 1).tolist()
    state = {"ann_id": int(rng.integers(1_000, 50_000)), "cap_id": int(rng.integers(1, 9_000)),
             "stuff_id": 10_000_000 + int(rng.integers(0, 1_000)), "captions": 0}
    info = {"description": f"cocolake synthetic COCO 2017 look-alike (seed {seed})",
            "url": "http://cocodataset.org", "version": "1.0", "year": 2017,
            "contributor": "cocolake synth", "date_created": "2017/09/01"}
    licenses = [{"url": url, "id": i, "name": name} for i, (url, name) in enumerate(_LICENSES, 1)]

    summary: dict = {"out": str(out), "images": dict(counts), "seed": seed, "annotations": {}}
    start = 0
    for split, n in counts.items():
        split_ids, start = ids[start:start + n], start + n
        if split == "test2017":
            imgs = [_image_record(rng, i, split, test=True) for i in split_ids]
            for img in imgs:
                _write_jpeg(out / split / img["file_name"], img, [], None, rng)
            _dump(out / "annotations" / "image_info_test2017.json",
                  {"info": info, "licenses": licenses, "images": imgs, "categories": THING_CATEGORIES})
            continue
        imgs, inst, kps, caps, stuff = [], [], [], [], []
        for k, image_id in enumerate(split_ids):
            img = _image_record(rng, image_id, split)
            empty = split == "train2017" and k == n - 1
            anns, thing_mask = ([], None) if empty else _instances(rng, img, state, crowd=k == 0)
            stuff_anns, label = _stuff(rng, img, thing_mask, state)
            imgs.append(img)
            inst += anns
            kps += [_keypoints(rng, a) for a in anns if a["category_id"] == 1]
            caps += _captions(rng, img, anns, state)
            stuff += stuff_anns
            _write_jpeg(out / split / img["file_name"], img, anns, label, rng)
        files = {
            f"instances_{split}.json": {"info": info, "licenses": licenses, "images": imgs,
                                        "annotations": inst, "categories": THING_CATEGORIES},
            f"person_keypoints_{split}.json": {
                "info": info, "licenses": licenses, "images": imgs, "annotations": kps,
                "categories": [{**THING_CATEGORIES[0], "keypoints": list(KEYPOINTS), "skeleton": SKELETON}]},
            f"captions_{split}.json": {"info": info, "licenses": licenses, "images": imgs, "annotations": caps},
            f"stuff_{split}.json": {"info": info, "licenses": licenses, "images": imgs,
                                    "annotations": stuff, "categories": STUFF_CATEGORIES},
        }
        for name, doc in files.items():
            _dump(out / "annotations" / name, doc)
            summary["annotations"][name] = len(doc["annotations"])
    summary["annotations"]["image_info_test2017.json"] = 0
    marker = {"generator": "cocolake.synth", "version": _VERSION, "images": images, "seed": seed,
              "summary": {k: v for k, v in summary.items() if k != "out"}}  # same bytes wherever written
    (out / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    log.info("synthetic dataset: %s images (+%s test) in %s", images, counts["test2017"], out)
    return summary


def ensure_generated(out: str | Path, images: int = 40, seed: int = 0) -> bool:
    """Generate unless ``out`` already holds a complete dataset with these parameters.

    Returns True when it (re)generated. Completeness is the marker file, written last.
    """
    marker = Path(out) / MARKER
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = None
    if found and (found.get("version"), found.get("images"), found.get("seed")) == (_VERSION, images, seed):
        return False
    generate(out, images=images, seed=seed)
    return True


def _prepare(out: Path) -> None:
    """Refuse to write over a directory we did not make; clear our own previous output."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ConfigError(f"{out}: directory is not empty and was not made by cocolake synth; "
                              "choose a new or empty directory")
        (out / MARKER).unlink()
        for sub in ("annotations", "train2017", "val2017", "test2017"):
            shutil.rmtree(out / sub, ignore_errors=True)
    for sub in ("annotations", "train2017", "val2017", "test2017"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _dump(path: Path, doc: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"), ensure_ascii=False)


def _image_record(rng, image_id: int, split: str, test: bool = False) -> dict:
    h, w = (int(v) for v in rng.integers(64, 161, size=2))
    name = f"{image_id:012d}.jpg"
    day, secs = int(rng.integers(0, 365)), int(rng.integers(0, 86_400))
    month, mday = 1 + day // 31 % 12, 1 + day % 28
    date = f"2013-{month:02d}-{mday:02d} {secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    rec = {"license": int(rng.integers(1, 9)), "file_name": name,
           "coco_url": f"http://images.cocodataset.org/{split}/{name}", "height": h, "width": w,
           "date_captured": date}
    if not test:
        farm, server, photo = int(rng.integers(1, 10)), int(rng.integers(1000, 9000)), int(rng.integers(10**9, 10**10))
        secret = "".join("0123456789abcdef"[int(d)] for d in rng.integers(0, 16, size=10))
        rec["flickr_url"] = f"http://farm{farm}.staticflickr.com/{server}/{photo}_{secret}_z.jpg"
    rec["id"] = image_id
    return rec


def _polygon(rng, cx: float, cy: float, r: float) -> list[float]:
    n = int(rng.integers(5, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.55, 1.0, n)
    xy = np.empty(2 * n)
    xy[0::2], xy[1::2] = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    return [round(float(v), 2) for v in xy]


def _instances(rng, img: dict, state: dict, crowd: bool) -> tuple[list[dict], np.ndarray]:
    h, w = img["height"], img["width"]
    anns, union = [], np.zeros((h, w), dtype=bool)
    crowd_done = False
    for _ in range(int(rng.integers(1, 7))):
        cat = int(rng.choice(_CAT_IDS, p=_CAT_WEIGHTS))
        if not crowd_done and (crowd or rng.random() < 0.12):
            crowd_done = True
            anns.append(_crowd(rng, img, cat, union))
            continue
        outside = rng.random() < 0.15
        while True:
            parts = []
            for _p in range(int(rng.choice([1, 1, 1, 2, 3]))):
                r = rng.uniform(6, min(h, w) / 3)
                cx = rng.uniform(-r / 2, r / 2) if outside else rng.uniform(r, w - r)
                cy = rng.uniform(0, h) if outside else rng.uniform(r, h - r)
                parts.append(_polygon(rng, cx, cy, r))
            rle = mask_utils.merge(mask_utils.frPyObjects(parts, h, w))
            area = float(mask_utils.area(rle))
            if area > 0:
                break
        xs = [v for p in parts for v in p[0::2]]
        ys = [v for p in parts for v in p[1::2]]
        x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
        x1, y1 = min(float(w), max(xs)), min(float(h), max(ys))
        bbox = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
        state["ann_id"] += int(rng.integers(1, 1_000))
        anns.append({"segmentation": parts, "area": area, "iscrowd": 0, "image_id": img["id"],
                     "bbox": bbox, "category_id": cat, "id": state["ann_id"]})
        union |= mask_utils.decode(rle).astype(bool)
    return anns, union


def _crowd(rng, img: dict, cat: int, union: np.ndarray) -> dict:
    """A crowd region as COCO writes it: uncompressed RLE, integer area and bbox."""
    h, w = img["height"], img["width"]
    yy, xx = np.ogrid[:h, :w]
    m = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(4, w / 3), rng.uniform(4, h / 3)
        m |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    flat = m.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:  # counts start with a run of zeros, possibly empty
        counts = [0] + counts
    union |= m
    x0, y0, bw, bh = (int(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))))
    return {"segmentation": {"counts": counts, "size": [h, w]}, "area": int(m.sum()), "iscrowd": 1,
            "image_id": img["id"], "bbox": [x0, y0, bw, bh], "category_id": cat,
            "id": 900_000_000_000 + cat * 100_000_000 + img["id"]}


def _stuff(rng, img: dict, thing_mask, state: dict) -> tuple[list[dict], np.ndarray]:
    """A label map of stuff: a sky-ish top, a ground-ish bottom, a blob; things are 'other'."""
    h, w = img["height"], img["width"]
    top = int(rng.choice([106, 157, 96, 173, 102]))
    bottom = int(rng.choice([124, 149, 154, 140, 115, 155]))
    blob = int(rng.choice([169, 97, 113, 135, 128, 165]))
    label = np.full((h, w), bottom, dtype=np.int16)
    horizon = int(rng.integers(h // 4, 3 * h // 4))
    label[:horizon] = top
    yy, xx = np.ogrid[:h, :w]
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, min(h, w) / 2)
    label[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = blob
    if thing_mask is not None:
        label[thing_mask] = 183
    anns = []
    for cat in sorted(int(c) for c in np.unique(label)):
        rle = mask_utils.encode(np.asfortranarray((label == cat).astype(np.uint8)))
        state["stuff_id"] += 1
        anns.append({"segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                     "area": float(mask_utils.area(rle)), "iscrowd": 0, "image_id": img["id"],
                     "bbox": [float(v) for v in mask_utils.toBbox(rle)], "category_id": cat,
                     "id": state["stuff_id"]})
    return anns, label


def _keypoints(rng, ann: dict) -> dict:
    kps = [0] * 51
    if not ann["iscrowd"] and rng.random() > 0.1:
        x, y, bw, bh = ann["bbox"]
        for j in range(17):
            v = int(rng.choice([0, 1, 2], p=[0.3, 0.2, 0.5]))
            if v:
                kps[3 * j:3 * j + 3] = [int(x + rng.uniform(0, bw)), int(y + rng.uniform(0, bh)), v]
    return {"segmentation": ann["segmentation"], "num_keypoints": sum(1 for v in kps[2::3] if v),
            "area": ann["area"], "iscrowd": ann["iscrowd"], "keypoints": kps, "image_id": ann["image_id"],
            "bbox": ann["bbox"], "category_id": 1, "id": ann["id"]}


def _captions(rng, img: dict, anns: list[dict], state: dict) -> list[dict]:
    names = [_CAT_NAME[a["category_id"]] for a in anns] or ["room"]
    out = []
    for _ in range(int(rng.choice([5, 5, 5, 6, 7]))):
        state["captions"] += 1
        odd = state["captions"] % 7 == 0
        table = _ODD_CAPTIONS if odd else _CAPTIONS
        n = names[int(rng.integers(0, len(names)))]
        m = names[int(rng.integers(0, len(names)))]
        text = table[int(rng.integers(0, len(table)))].format(
            a=_ADJECTIVES[int(rng.integers(0, len(_ADJECTIVES)))], n=n, m=m, N=n.upper())
        state["cap_id"] += int(rng.integers(1, 500))
        out.append({"image_id": img["id"], "id": state["cap_id"], "caption": text})
    return out


def _write_jpeg(path: Path, img: dict, anns: list[dict], label, rng) -> None:
    h, w = img["height"], img["width"]
    if label is not None:
        palette = np.zeros((184, 3), dtype=np.uint8)
        palette[92:] = rng.integers(40, 220, size=(92, 3), dtype=np.uint8)
        pixels = palette[label]
    else:
        pixels = np.broadcast_to(rng.integers(40, 220, size=3, dtype=np.uint8), (h, w, 3))
    im = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    draw = ImageDraw.Draw(im)
    for ann in anns:
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if ann["iscrowd"]:
            x, y, bw, bh = ann["bbox"]
            draw.ellipse([x, y, x + bw, y + bh], outline=colour)
        else:
            for part in ann["segmentation"]:
                draw.polygon(part, fill=colour)
    im.save(path, "JPEG", quality=85)

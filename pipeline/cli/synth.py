"""``cocolake synth --out DIR [--images N] [--seed S]``: write a synthetic COCO-like dataset."""

from __future__ import annotations

import argparse

from ..synth import generate


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"need at least 2 images (one train, one val), got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth",
        help="write a small synthetic dataset shaped like COCO 2017",
        description="Write annotations/*.json (instances, person_keypoints, captions, stuff, "
        "image_info) and {train,val,test}2017/*.jpg under DIR. Same arguments, same bytes.",
    )
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: new, empty, or a previous synth output")
    p.add_argument("--images", type=_at_least_two, default=40, metavar="N",
                   help="train + val images, split ~80/20; a few test images come on top (default: 40)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    return p


def run(args: argparse.Namespace) -> int:
    summary = generate(args.out, images=args.images, seed=args.seed)
    images = summary["images"]
    print(f"wrote {sum(images.values())} images to {summary['out']} "
          f"({', '.join(f'{k}: {v}' for k, v in images.items())})")
    for name, count in summary["annotations"].items():
        print(f"  annotations/{name}: {count} annotations")
    return 0

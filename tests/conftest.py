"""Shared fixtures. Real sample data is read in place from ../shared/data/coco-mini."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
COCO_MINI = (ROOT / ".." / "shared" / "data" / "coco-mini").resolve()


@pytest.fixture(scope="session")
def coco_mini() -> pathlib.Path:
    if not (COCO_MINI / "annotations").is_dir():
        pytest.fail(f"sample data not found at {COCO_MINI}")
    return COCO_MINI

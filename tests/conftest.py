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


@pytest.fixture(scope="session")
def mini_warehouse(coco_mini, tmp_path_factory):
    """coco-mini (instances, keypoints, captions; train2017 + val2017) ingested once.

    Returns (warehouse directory, dataset name). Tests must not write to it.
    """
    from pipeline.runner import run_ingest

    root = tmp_path_factory.mktemp("warehouse")
    run_ingest([str(coco_mini / "annotations")], warehouse=str(root), dataset="mini", workers=1)
    return str(root), "mini"

# the loopback HTTP server fixture (`http_server`), see tests/httpserver.py;
# a Dask cluster of worker processes and an S3 server (`dask_cluster`, `s3_storage`), see tests/services.py
pytest_plugins = ["tests.httpserver", "tests.services"]

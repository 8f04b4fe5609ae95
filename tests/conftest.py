"""Shared fixtures. Real sample data is read in place from ../shared/data/coco-mini.

Where the checkout is not beside ``shared/`` (a throwaway clone of a local checkout, as a
clean-clone check makes), the sample data is looked for beside the repository it was cloned
from, or where ``COCOLAKE_COCO_MINI`` says.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = pathlib.Path("shared") / "data" / "coco-mini"


def _origin() -> pathlib.Path | None:
    """The local repository this checkout was cloned from, if it was."""
    try:
        url = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = pathlib.Path(url.removeprefix("file://")) if url and "://" not in url.removeprefix("file://") else None
    return path if path is not None and path.is_dir() else None


def _coco_mini() -> pathlib.Path:
    candidates = [ROOT.parent / SAMPLE]
    if os.environ.get("COCOLAKE_COCO_MINI"):
        candidates.insert(0, pathlib.Path(os.environ["COCOLAKE_COCO_MINI"]))
    origin = _origin()
    if origin is not None:
        candidates.append(origin.resolve().parent / SAMPLE)
    found = next((c for c in candidates if (c / "annotations").is_dir()), candidates[0])
    return found.resolve()


COCO_MINI = _coco_mini()


@pytest.fixture(scope="session")
def coco_mini() -> pathlib.Path:
    if not (COCO_MINI / "annotations").is_dir():
        pytest.fail(f"sample data not found at {COCO_MINI} (set COCOLAKE_COCO_MINI to its directory)")
    return COCO_MINI


@pytest.fixture(scope="session")
def mini_warehouse(coco_mini, tmp_path_factory):
    """coco-mini (instances, keypoints, captions; train2017 + val2017) ingested once.

    Returns (warehouse directory, dataset name). Tests must not write to it.
    """
    from pipeline.ingest.run import run_ingest

    root = tmp_path_factory.mktemp("warehouse")
    run_ingest([str(coco_mini / "annotations")], warehouse=str(root), dataset="mini", workers=1)
    return str(root), "mini"

# the loopback HTTP server fixture (`http_server`), see tests/httpserver.py;
# a Dask cluster of worker processes and an S3 server (`dask_cluster`, `s3_storage`), see tests/services.py
pytest_plugins = ["tests.httpserver", "tests.services"]

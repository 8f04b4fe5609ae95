"""Kept for the import path the README names: ``from pipeline.runner import run_ingest``."""

from .ingest.cluster import dask_client
from .ingest.run import IngestReport, run_ingest

__all__ = ["IngestReport", "dask_client", "run_ingest"]

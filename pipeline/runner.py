"""Kept for the import path the README names: ``from pipeline.runner import run_ingest``."""

from .ingest.run import IngestReport, dask_client, run_ingest

__all__ = ["IngestReport", "dask_client", "run_ingest"]

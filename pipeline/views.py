"""Kept for the import path the README names: ``pipeline.views.connect``."""

from .query.views import SQL_DIR, connect, fetch_arrow, run_sql

__all__ = ["SQL_DIR", "connect", "fetch_arrow", "run_sql"]

"""Errors a person can act on: what failed, where, what was received, what would fix it.

Every error cocolake raises on purpose is a ``CocolakeError``; the CLI prints ``str(err)``
as one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class CocolakeError(Exception):
    """Base class: the message is complete and meant for the user."""


class ConfigError(CocolakeError):
    """A config file or command-line option is invalid (names file and dotted key)."""


class SourceError(CocolakeError):
    """A source cannot be opened, downloaded, verified or recognised."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.source, self.problem))


class BadFileError(SourceError):
    """A whole file is unusable: not JSON, truncated, wrong shape, duplicate ids."""


class BadRecordError(CocolakeError):
    """One record is invalid: names the file, the record (id or index) and the problem."""

    def __init__(self, source: str, section: str, index: int, record_id, problem: str):
        self.source = source
        self.section = section
        self.index = index
        self.record_id = record_id
        self.problem = problem
        super().__init__(f"{source}: {describe_record(section, index, record_id)}: {problem}")

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.source, self.section, self.index, self.record_id, self.problem))


class WarehouseError(CocolakeError):
    """The warehouse is missing, unreadable, or a commit could not be made."""


class QueryError(CocolakeError):
    """A SQL query, predicate or view failed; the message shows the SQL."""


class EvaluationError(CocolakeError):
    """An evaluation cannot be made: an unknown run, ground truth without what it needs."""


class ClusterError(CocolakeError):
    """The Dask cluster failed under the tasks: its workers died (often out of memory)."""


class ExportError(CocolakeError):
    """An export cannot be written: unsafe file name, missing image, clashing ids."""


class MergeError(CocolakeError):
    """A merge cannot be made: a missing source, colliding ids under ``keep``, a bad target."""


class InvalidMask(CocolakeError, ValueError):
    """A segmentation or RLE that cannot be encoded; ``index`` is its position in a batch."""

    def __init__(self, problem: str, index: int | None = None, what: str = "annotation"):
        self.problem = problem
        self.index = index
        super().__init__(problem if index is None else f"{what} #{index} in batch: {problem}")


def describe_record(section: str, index: int, record_id) -> str:
    """``annotation id=17`` or ``annotation #3`` (index) when the record has no usable id."""
    noun = {
        "images": "image",
        "annotations": "annotation",
        "categories": "category",
        "licenses": "license",
    }.get(section, section)
    if record_id is not None:
        return f"{noun} id={record_id!r}" if isinstance(record_id, str) else f"{noun} id={record_id}"
    return f"{noun} #{index}"

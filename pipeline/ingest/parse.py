"""parse: the bytes of one chunk → its records as Python objects.

Input: bytes between records of one top-level array (from ``scan``), the file's name, the
section and the chunk's byte offset (for messages). Output: a list of dicts/lists/values,
read by ``jsontext.loads`` (orjson, Python's parser for NaN and big integers); bad JSON is a
``BadFileError`` naming file, section and byte. ``no_cyclic_gc`` wraps the task functions
that parse and flatten. Imports only the shared core (errors, jsontext).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys

from ..errors import BadFileError
from ..jsontext import loads


@contextlib.contextmanager
def no_cyclic_gc():
    """Python's cyclic garbage collector off while a chunk is parsed and flattened (a
    context manager, or a decorator of a task function: ``@no_cyclic_gc()``).

    Parsed records are millions of dicts and lists, none in a reference cycle; with the
    collector on, every few hundred allocations of the flatten step start a collection
    that walks them again (measured: a fifth of the ingest time at train2017 scale).
    Reference counting frees them all the same.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_chunk(buf: bytes, *, source: str, section: str, offset: int) -> list:
    """The records of a chunk (bytes between records of one array) as Python objects."""
    body = buf.strip(b" \t\r\n")
    if body.startswith(b","):
        body = body[1:]
    if not body.strip(b" \t\r\n"):
        return []
    data = b"[" + body + b"]"
    try:
        records = loads(data)
    except UnicodeDecodeError as err:
        raise BadFileError(source, f"{section}: bytes at {offset + err.start - 1} are not UTF-8 text") from None
    except json.JSONDecodeError as err:
        where = offset + err.pos - 1 + (len(buf) - len(buf.lstrip(b" \t\r\n,")))
        raise BadFileError(source, f"{section}: invalid JSON near byte {where}: {err.msg}") from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise BadFileError(
            source, f"{section}: a number near byte {offset} has more digits than Python reads "
            f"({sys.get_int_max_str_digits()})"
        ) from None
    except RecursionError:
        raise BadFileError(source, f"{section}: a record near byte {offset} is nested too deeply") from None
    return records

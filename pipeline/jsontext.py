"""jsontext: compact JSON text of parsed values, exactly as Python's ``json`` writes it.

Input: values parsed from COCO JSON (dicts, lists, str, int, float, bool, None).
Output: compact JSON bytes (``dumps``) or text (``dumps_text``), the same as
``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``; and ``loads``, the one
JSON reader of the package (ingest's chunks and documents, the export's ``raw``/``extra``).

Written by orjson (several times faster) except where orjson would differ: it writes NaN
and Infinity as ``null`` and refuses integers beyond 64 bits. Python's parser accepts
both (and real files carry them), so for such values the stdlib writes them back as they
were read; ``loads`` reads them the same way. Shared by ingest (``raw``, ``extra``, ``info``, rejects) and the COCO export.
"""

from __future__ import annotations

import json
import math

import orjson


def dumps(value) -> bytes:
    try:
        out = orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits
        return _stdlib(value).encode()
    if b"null" in out and has_non_finite(value):
        return _stdlib(value).encode()
    return out


def dumps_text(value) -> str:
    return dumps(value).decode()


def has_non_finite(value) -> bool:
    """Whether a NaN or an infinity is anywhere in ``value``."""
    if type(value) is float:
        return not math.isfinite(value)
    if type(value) is list:
        return any(has_non_finite(v) for v in value)
    if type(value) is dict:
        return any(has_non_finite(v) for v in value.values())
    return False


def _stdlib(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads(data: bytes | str):
    """The value of JSON text: orjson, else Python's parser for what orjson refuses but
    ``json`` writes (NaN, Infinity, integers beyond 64 bits).

    Raises what ``json.loads`` raises: ``json.JSONDecodeError``, ``UnicodeDecodeError``,
    ``ValueError`` (more digits than ``sys.get_int_max_str_digits()``), ``RecursionError``.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data)

"""jsontext writes what Python's json writes, NaN, Infinity and huge integers included."""

from __future__ import annotations

import json

import pytest

from pipeline import jsontext

VALUES = [
    {"a": 1, "b": [1.5, -2, None, True], "c": "é\u2028\"x\""},
    [float("nan"), float("inf"), -float("inf")],
    {"deep": [[{"x": float("nan")}]], "null": None},
    [2**64, -(2**70), 2**63 - 1],
    {"only null": None},
    [],
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_equals_the_stdlib(value):
    want = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert jsontext.dumps_text(value) == want
    assert jsontext.dumps(value) == want.encode()


def test_non_finite_values_are_found_anywhere():
    assert jsontext.has_non_finite({"a": [1, {"b": float("-inf")}]})
    assert not jsontext.has_non_finite({"a": [1, {"b": None}], "c": "NaN"})

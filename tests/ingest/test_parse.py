"""parse: bad JSON in a chunk or a whole document is a ``BadFileError`` that names the file,
the section of a chunk and the document's byte where the problem is."""

from __future__ import annotations

import re

import pytest

from pipeline.errors import BadFileError
from pipeline.ingest import parse

# a chunk as the scan cuts it: blanks and the comma before its first record, non-ASCII text first
_CHUNK = ',\n    {"id": 1, "caption": "caf\u00e9 \u00e0 la cr\u00e8me"},\n    {"id": 2, "caption": "%s"}\n'
_OFFSET = 1000


def _byte(message: str) -> int:
    return int(re.search(r"(?:near byte|bytes at) (\d+)", message).group(1))


@pytest.mark.parametrize("bad, problem", [
    (b"\xff", "are not UTF-8 text"),  # a byte no UTF-8 text has
    (b'\\q', "invalid JSON near byte"),  # an escape JSON does not have
])
def test_a_chunk_names_the_documents_byte(bad, problem):
    buf = (_CHUNK % "@").encode().replace(b"@", bad)
    with pytest.raises(BadFileError) as err:
        parse.parse_chunk(buf, source="captions_val2017.json", section="annotations", offset=_OFFSET)
    message = str(err.value)
    assert message.startswith("captions_val2017.json: annotations: ") and problem in message
    assert _byte(message) == _OFFSET + buf.index(bad)


@pytest.mark.parametrize("bad, problem", [(b"\xff", "are not UTF-8 text"), (b'\\q', "invalid JSON near byte")])
def test_a_document_names_its_byte(bad, problem):
    data = '{"info": {"description": "caf\u00e9"}, "images": ["@"]}'.encode().replace(b"@", bad)
    with pytest.raises(BadFileError) as err:
        parse.parse_document(data, "sa_1.json")
    message = str(err.value)
    assert message.startswith("sa_1.json: ") and problem in message
    assert _byte(message) == data.index(bad)


def test_a_chunk_and_a_document_say_the_same_of_a_number_too_long():
    digits = b"9" * 5000
    with pytest.raises(BadFileError, match=r"^x\.json: images: a number near byte 7 has more digits than Python "
                       r"reads \(\d+\)$"):
        parse.parse_chunk(b',{"id": ' + digits + b"}", source="x.json", section="images", offset=7)
    with pytest.raises(BadFileError, match=r"^x\.json: a number has more digits than Python reads \(\d+\)$"):
        parse.parse_document(b'{"id": ' + digits + b"}", "x.json")

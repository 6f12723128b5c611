"""The response class of kasp's hot answers (POST /enqueue's 202/200/429): Sanic's
HTTPResponse with the same header sanitising, done without `str.translate`.

Why: Sanic strips CR, LF and NUL from every header name and value it sends with
`value.translate(HEADER_TRANSLATION_TABLE)`, and for a table of deletions that is a dict
lookup, with a KeyError raised and cleared inside CPython, for every character of every
header: 44,200 of the 331,400 instructions of a POST /enqueue 202 (13%; `callgrind`,
bench/callgrind_enqueue.py, docs/PERFORMANCE.md "The remaining gap, line by line"). Three
`in` tests (memchr) find that a header holds none of them; only one that does is translated,
so what is sent is exactly what Sanic sends."""

from __future__ import annotations

from sanic import HTTPResponse
from sanic.response.types import HEADER_TRANSLATION_TABLE


def sanitize_header_value(value: str) -> str:
    """`value` without CR, LF and NUL: Sanic's `_sanitize_header_value`, result for result."""
    if "\r" in value or "\n" in value or "\x00" in value:
        return value.translate(HEADER_TRANSLATION_TABLE)
    return value


class Answer(HTTPResponse):
    """HTTPResponse whose headers are sanitised by `sanitize_header_value`."""

    __slots__ = ()
    _sanitize_header_value = staticmethod(sanitize_header_value)

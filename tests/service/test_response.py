"""service/http/response.py sanitises header values without str.translate: it must send
exactly what Sanic's HTTPResponse sends, for any header name or value."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sanic import HTTPResponse

from service.http.response import Answer, sanitize_header_value

# Text rich in what is stripped (CR, LF, NUL) and in what is kept around it.
HEADER_TEXT = st.text(alphabet=st.sampled_from(["\r", "\n", "\x00", "a", "-", " ", "é", "\u2028", "/"]))


@given(HEADER_TEXT)
def test_sanitize_matches_sanic(value: str) -> None:
    assert sanitize_header_value(value) == HTTPResponse._sanitize_header_value(value)


@given(st.text())
def test_sanitize_matches_sanic_on_any_text(value: str) -> None:
    assert sanitize_header_value(value) == HTTPResponse._sanitize_header_value(value)


def test_answer_sends_the_headers_sanic_sends() -> None:
    headers = {"Location": "/jobs/a\r\nSet-Cookie: x=1", "Retry-After": "1", "X-Odd": "a\x00b\nc"}
    ours = Answer(b"{}", status=202, headers=headers, content_type="application/json")
    sanic = HTTPResponse(b"{}", status=202, headers=headers, content_type="application/json")
    assert list(ours.processed_headers) == list(sanic.processed_headers)
    assert (b"Location", b"/jobs/aSet-Cookie: x=1") in list(ours.processed_headers)

"""decode_body decodes with orjson where it can: it must accept, decode and refuse exactly
as the stdlib decoder (NaN/Infinity refused) does, with the same error messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.http.errors import InvalidRequest
from service.http.json_body import MAX_DEPTH, decode_body


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def stdlib_outcome(body: bytes) -> tuple[str, str]:
    """What kasp said before orjson (its stdlib decoder): ("ok", repr of the object) or ("error", message)."""
    try:
        doc = json.JSONDecoder(parse_constant=_reject).decode(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return "error", f"the body is not valid JSON: {exc}"
    except RecursionError:
        return "error", f"the body nests arrays or objects more than {MAX_DEPTH} levels deep"
    if not isinstance(doc, dict):
        return "error", f"the body must be a JSON object, got {type(doc).__name__}"
    if _depth(doc) > MAX_DEPTH:
        return "error", f"the body nests arrays or objects more than {MAX_DEPTH} levels deep"
    return "ok", repr(doc)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0  # repr tells 1 from 1.0 and True, and -0.0 from 0.0


def outcome(body: bytes) -> tuple[str, str]:
    try:
        doc, _ = decode_body(body)
    except InvalidRequest as exc:
        return "error", str(exc)
    return "ok", repr(doc)


numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(st.characters(codec=None)))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a shared machine
@given(st.dictionaries(st.text(st.characters(codec=None)), values, max_size=4), st.booleans())
def test_any_json_object_decodes_as_the_stdlib_decodes_it(doc: dict[str, Any], ascii_only: bool) -> None:
    body = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert outcome(body) == stdlib_outcome(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a shared machine
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=60), st.binary(max_size=6))
def test_any_damaged_body_is_refused_or_accepted_as_the_stdlib_does(
    noise: bytes, at: int, insert: bytes
) -> None:
    base = b'{"id": "a-1", "payload": "p\\u00e9", "max_retries": 3, "n": [1.5, -0.0, null, true]}'
    body = base[:at] + insert + noise + base[at:]
    assert outcome(body) == stdlib_outcome(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b'{"a": 1e400}',
        b'{"a": "\\ud800"}',
        b'{"a": "\\udc00x"}',
        b'{"a": "\xff"}',
        b'{"a": "\xed\xa0\x80"}',
        b'\xef\xbb\xbf{"a": 1}',
        b'{"a": 123456789012345678901234567890}',
        b'{"a": -9223372036854775809}',
        b'{"a": 18446744073709551616}',
        b'{"a": 1, "a": 2, "b": 3}',
        b"[" * 1100 + b"]" * 1100,
        b"[" * 40 + b"]" * 40,
        b'{"a":' + b"[" * 40 + b"]" * 40 + b"}",
        b"null",
        b"12345678901234567890123",
        b'{"a": 1} x',
        b'{"a": "\x01"}',
    ],
)
def test_odd_inputs_decode_as_the_stdlib_decodes_them(body: bytes) -> None:
    assert outcome(body) == stdlib_outcome(body)


def test_a_string_orjson_decoded_needs_no_surrogate_check_and_a_fallback_one_does() -> None:
    assert decode_body(b'{"a": "\\u00e9"}') == ({"a": "é"}, False)
    assert decode_body(b'{"a": "\\ud800"}') == ({"a": "\ud800"}, True)

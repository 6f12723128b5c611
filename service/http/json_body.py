"""Request bodies as JSON: decoded once, bounded in depth, every string valid Unicode.

JSON may spell a lone surrogate (`"\\ud800"`), which Python decodes into a `str`
that no UTF-8 writer accepts: a store refuses the row, an event stream cannot
encode the message. Such a string is refused here with 400 naming the field,
before anything is written, so every store accepts exactly the same inputs.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from domain.text import is_valid_text, safe_text
from service.http.errors import InvalidRequest

#: A guess: kasp's own bodies nest 3 levels (a batch of jobs); 32 leaves room for any
#: mistaken payload while no later step (error messages, json.dumps) recurses near
#: Python's recursion limit (~1000 frames), which deeper documents used to hit (500).
MAX_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: `json.loads(body, parse_constant=...)` builds a new decoder on
# every call, ~2% of a POST /enqueue in the profile (docs/PERFORMANCE.md).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


#: orjson turns an integer literal outside 64 bits (19 digits or more) into a float, where
#: the stdlib decoder keeps the int that error messages show; such a body is decoded by the stdlib.
_LONG_NUMBER_DIGITS = 19
_DIGITS = b"0123456789"
_LONG_NUMBER = re.compile(rb"[0-9]{%d}" % _LONG_NUMBER_DIGITS)


def decode_object(body: bytes) -> dict[str, Any]:
    """The body's JSON object, or InvalidRequest (`invalid_json`) saying what is wrong."""
    return decode_body(body)[0]


def decode_body(body: bytes) -> tuple[dict[str, Any], bool]:
    """(the body's JSON object, whether a string in it may hold a lone surrogate: `check_text`
    still to run), or InvalidRequest (`invalid_json`) saying what is wrong.

    orjson first: on a one-job body it took 0.23 µs where the stdlib decoder took 1.0 plus
    0.2 for the `\\u` scan (timeit; docs/PERFORMANCE.md, Item 1). Whatever it accepts, the
    stdlib decoder (with NaN/Infinity refused) accepts and decodes to the same values, and a
    string it returns is valid Unicode (it refuses lone surrogates and invalid UTF-8). What it
    refuses, or may decode differently (integers beyond 64 bits), goes to the stdlib decoder,
    so what is accepted and every error message are exactly as before
    (tests/service/test_json_body.py compares the two)."""
    if len(body) - len(body.translate(None, _DIGITS)) < _LONG_NUMBER_DIGITS or not _LONG_NUMBER.search(body):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the stdlib decoder below says why, as it always has
        else:
            # Nesting deeper than MAX_DEPTH needs more than MAX_DEPTH opening brackets in the
            # text (one inside a string only adds to the count), so a body with fewer skips
            # the depth walk (~4 µs for a one-job body; Issue 12).
            if type(doc) is dict and body.count(b"{") + body.count(b"[") <= MAX_DEPTH:
                return doc, False
    return _decode_slowly(body)


def _decode_slowly(body: bytes) -> tuple[dict[str, Any], bool]:
    """`decode_body` for what orjson refused, may decode differently, or nests deeply."""
    if not body:
        raise InvalidRequest("the body is empty; expected a JSON object", code="invalid_json")
    doc = _stdlib_decode(body)
    if not isinstance(doc, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {type(doc).__name__}", code="invalid_json")
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _depth_exceeds(doc, MAX_DEPTH):
        raise InvalidRequest(
            f"the body nests arrays or objects more than {MAX_DEPTH} levels deep", code="invalid_json"
        )
    return doc, may_hold_lone_surrogates(body)


def _stdlib_decode(body: bytes) -> Any:
    try:
        return _DECODER.decode(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest(
            f"the body nests arrays or objects more than {MAX_DEPTH} levels deep", code="invalid_json"
        ) from None


def may_hold_lone_surrogates(body: bytes) -> bool:
    """Whether a string decoded from `body` can hold a lone surrogate. Only a `\\u` escape can
    spell one (the UTF-8 decoder refuses an encoded surrogate), so a body without any needs
    no `check_text`: for a one-job body that walk took ~4.4 µs, this scan ~1 µs (timeit on
    the shared machine; docs/PERFORMANCE.md, Issue 12)."""
    return b"\\u" in body


def check_text(doc: dict[str, Any]) -> None:
    """InvalidRequest (`invalid_text`, naming the field) if a key or string in `doc` is not
    valid Unicode text. Iterative: the depth is bounded, but no recursion is needed."""
    for key, value in doc.items():
        if not is_valid_text(key):
            _refuse(safe_text(key))
        pending = [value]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                if not is_valid_text(item):
                    _refuse(key)
            elif isinstance(item, dict):
                for k, v in item.items():
                    if not is_valid_text(k):
                        _refuse(key)
                    pending.append(v)
            elif isinstance(item, list):
                pending.extend(item)


def _refuse(field: str) -> None:
    raise InvalidRequest(
        f"{field} is not valid Unicode text: it holds a lone surrogate (such as \\ud800), "
        "which cannot be stored or sent as UTF-8",
        field=field,
        code="invalid_text",
    )


def _depth_exceeds(doc: Any, limit: int) -> bool:
    pending: list[tuple[Any, int]] = [(doc, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            pending.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            pending.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False

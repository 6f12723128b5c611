"""The result rule: what a processor may return for `succeeded` to record (SPEC, Faults).

A result is a JSON value (object, array, string, number, true/false, null) of at most
64 KiB encoded. "Encoded" means compact JSON (no spaces after `,` and `:`) as UTF-8
bytes with non-ASCII characters kept, not escaped: the form kasp's SQL stores write
event data in (service/store/rows.py), so the limit counts what is stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from domain.errors import InvalidResult

#: SPEC, Faults: a result "over 64 KiB encoded" fails the attempt; exactly 64 KiB is accepted.
MAX_RESULT_BYTES = 64 * 1024

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def check_result(value: Any) -> Any:
    """`value` as a fresh plain-JSON copy (what replaying a durable store gives back), or
    InvalidResult naming what is wrong: not JSON, or over MAX_RESULT_BYTES encoded."""
    if value is None:
        return None  # the common case (a processor with no answer): nothing to check
    try:
        encoded = _encode(value).encode("utf-8")
    except Exception:  # TypeError, ValueError (NaN, cycles, surrogates), RecursionError, or
        # whatever a processor's own dict/list subclass raises: none of it is JSON
        raise InvalidResult(f"the result is not a JSON value: {_describe(value)}") from None
    if len(encoded) > MAX_RESULT_BYTES:
        raise InvalidResult(
            f"the result is {len(encoded)} bytes as compact UTF-8 JSON, over the limit of "
            f"{MAX_RESULT_BYTES} bytes (64 KiB)"
        )
    try:
        decoded = json.loads(encoded)
        # The encoder quietly turns tuples into arrays and int/float/bool/None keys into
        # strings: a value that does not come back equal was not JSON.
        faithful = bool(decoded == value)
    except Exception:  # a RecursionError, or a subclass's own __eq__
        faithful = False
    if not faithful:
        raise InvalidResult(f"the result is not a JSON value: {_describe(value)}")
    return decoded


def _describe(value: Any) -> str:
    try:
        return _problem(value)
    except Exception as exc:  # walking a processor's own container type raised
        return f"reading it raised {type(exc).__name__}"


def _problem(value: Any) -> str:
    """The first thing in `value` that JSON cannot carry, and where it is (`$` is the result)."""
    seen: set[int] = set()  # containers on the current path: a cycle has no JSON form
    for at, item, entering in _walk(value):
        if not entering:
            seen.discard(id(item))
            continue
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            try:
                int.__repr__(item)
            except ValueError:  # over sys.get_int_max_str_digits() digits
                return f"{_path(at)} is an integer too long to write as JSON"
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{_path(at)} is {item!r}, which JSON has no number for"
            continue
        if isinstance(item, str):
            if _has_lone_surrogate(item):
                return f"{_path(at)} is a string with a lone surrogate (not Unicode text)"
            continue
        if not isinstance(item, (dict, list)):
            hint = " (use a list)" if isinstance(item, tuple) else ""
            return f"{_path(at)} is of type {type(item).__name__}, which is not a JSON value{hint}"
        if id(item) in seen:
            return f"{_path(at)} contains itself (a cycle)"
        seen.add(id(item))
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    return (
                        f"{_path(at)} has the key {key!r} ({type(key).__name__}): "
                        "JSON object keys are strings"
                    )
                if _has_lone_surrogate(key):
                    return f"{_path(at)} has a key with a lone surrogate (not Unicode text)"
    return "it does not encode as JSON and decode back to the same value (nested too deeply?)"


#: Where an item sits: (where its container sits, its key or index), None for the result
#: itself. Linked, not a string per item, so a deep value costs no quadratic copying.
_At = tuple[Any, str | int] | None


def _path(at: _At) -> str:
    parts: list[str] = []
    while at is not None:
        at, step = at
        parts.append(f"[{step!r}]")
    return "$" + "".join(reversed(parts))


def _walk(value: Any) -> Iterator[tuple[_At, Any, bool]]:
    """(where, item, True) entering each item depth-first, (where, container, False) leaving
    a dict or list: iterative, so a result nested too deeply for the encoder is still walked."""
    stack: list[tuple[_At, Any, bool]] = [(None, value, True)]
    while stack:
        at, item, entering = stack.pop()
        yield at, item, entering
        if not entering:
            continue
        if isinstance(item, dict):
            children: list[tuple[_At, Any, bool]] = [((at, k), v, True) for k, v in item.items()]
        elif isinstance(item, list):
            children = [((at, i), v, True) for i, v in enumerate(item)]
        else:
            continue
        stack.append((at, item, False))
        stack.extend(reversed(children))


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False

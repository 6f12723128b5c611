"""Request bodies as JSON: decoded once, bounded in depth, every string valid Unicode.

JSON may spell a lone surrogate (`"\\ud800"`), which Python decodes into a `str`
that no UTF-8 writer accepts: a store refuses the row, an event stream cannot
encode the message. Such a string is refused here with 400 naming the field,
before anything is written, so every store accepts exactly the same inputs.
"""

from __future__ import annotations

import json
from typing import Any

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


def decode_object(body: bytes) -> dict[str, Any]:
    """The body's JSON object, or InvalidRequest (`invalid_json`) saying what is wrong."""
    if not body:
        raise InvalidRequest("the body is empty; expected a JSON object", code="invalid_json")
    try:
        doc = _DECODER.decode(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest(
            f"the body nests arrays or objects more than {MAX_DEPTH} levels deep", code="invalid_json"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"the body must be a JSON object, got {type(doc).__name__}", code="invalid_json")
    if _depth_exceeds(doc, MAX_DEPTH):
        raise InvalidRequest(
            f"the body nests arrays or objects more than {MAX_DEPTH} levels deep", code="invalid_json"
        )
    return doc


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

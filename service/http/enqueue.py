"""POST /enqueue: admit a job."""

from __future__ import annotations

import json as stdlib_json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from sanic import Blueprint, HTTPResponse, Request

from domain.errors import QueueFull
from domain.states import JobState
from service.clock import now_ms
from service.engine import Draining, JobRequest
from service.http.errors import JSON, InvalidRequest, PayloadTooLarge, render_constant
from service.http.json_body import check_text, decode_body
from service.http.response import Answer
from service.parts import Parts, parts_of

bp = Blueprint("enqueue")

ID_PATTERN = re.compile(r"[A-Za-z0-9\-_.:@~]{1,128}")
# Limits from SPEC.md, POST /enqueue.
MAX_RETRIES_LIMIT = 100
#: Each state's name as bytes, for the 202/200 body: Enum's `.value` is a property (~0.3 µs).
_STATE_BYTES = {state: state.value.encode() for state in JobState}
PRIORITY_MIN, PRIORITY_MAX = -100, 100
MAX_TIMEOUT_MS = 86_400_000  # a day
MAX_DELAY_MS = 31_536_000_000  # a year of 365 days: delay_ms's bound, and how far ahead run_at may be
#: Every field an enqueue body may hold (SPEC: unknown fields are refused, naming the field).
FIELDS = ("id", "payload", "max_retries", "priority", "timeout_ms", "run_at", "delay_ms")
_KNOWN = frozenset(FIELDS)
#: RFC 3339 date-time (section 5.6): the offset is required, `T`/`Z` in either case, a space
#: for `T` allowed (the RFC's note); fromisoformat then checks the numbers are a real time.
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
SHOWN_CHARS = 60  # a guess: enough of a bad value to recognise it in an error message
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ABSENT = object()  # a field not in the body (a present `null` is a value, and refused)
_ONE_MS = timedelta(milliseconds=1)


def admit_body(request: Request) -> Parts:
    """What /enqueue and /enqueue/batch check before reading a body: the service is
    accepting work, and the body is within MAX_BODY_BYTES. Content-Type (JSON, or no body)
    and the token were checked by service/http/access.py."""
    parts = parts_of(request)
    if not parts.engine.accepting:
        raise Draining()
    limit = parts.config.max_body_bytes
    if len(request.body) > limit:
        raise PayloadTooLarge(f"the body is {len(request.body)} bytes; the limit is {limit} (MAX_BODY_BYTES)")
    return parts


@bp.post("/enqueue")
async def enqueue(request: Request) -> HTTPResponse:
    parts = admit_body(request)
    engine = parts.engine
    doc, escaped = decode_body(request.body)
    job_request = parse_job(doc, now_ms=now_ms(), escaped=escaped)
    try:
        view, created = await engine.enqueue(job_request)
    except QueueFull as exc:
        # The one rejection that comes in floods: rendered here, from the same error
        # table, rather than through Sanic's exception path (~28% of a 429 request in
        # the profile, the response it sends included; docs/PERFORMANCE.md).
        response = render_constant(exc)
        parts.metrics.count_enqueue_rejection(response.status)
        return response
    # Bytes assembled, not `json(...)`: the id matched ID_PATTERN and the state is an
    # enum value, so neither needs escaping, and Sanic's JSONResponse with its encoder
    # was ~5% of a POST /enqueue in the profile (docs/PERFORMANCE.md, Issue 12).
    body = b'{"status":"%b","id":"%b"}' % (_STATE_BYTES[view.state], view.id.encode())
    if created:
        return Answer(body, status=202, headers={"Location": "/jobs/" + view.id}, content_type=JSON)
    return Answer(body, status=200, content_type=JSON)


def parse_job(doc: dict[str, Any], *, now_ms: int, escaped: bool = True) -> JobRequest:
    """The job a decoded /enqueue body (or one item of a batch) asks for, or InvalidRequest
    naming the first field at fault. `now_ms` resolves `delay_ms` and bounds `run_at`.
    `escaped=False`: no string in `doc` can hold a lone surrogate (json_body.decode_body)."""
    if escaped:
        check_text(doc)
    if not _KNOWN.issuperset(doc):  # one C-level test; the loop only to name the first unknown
        name = next(name for name in doc if name not in _KNOWN)
        raise InvalidRequest(
            f"unknown field {name!r}; an enqueue body has only {', '.join(FIELDS)}",
            field=name,
            code="unknown_field",
        )

    job_id = doc.get("id")
    if job_id is None:
        raise InvalidRequest("id is required", field="id")
    if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
        raise InvalidRequest(
            "id must be a string of 1-128 characters from A-Z a-z 0-9 - _ . : @ ~", field="id"
        )

    payload = doc.get("payload")
    if payload is None:
        raise InvalidRequest("payload is required (a string, may be empty)", field="payload")
    if not isinstance(payload, str):
        raise InvalidRequest(f"payload must be a string, got {json_type(payload)}", field="payload")

    max_retries = _int_field(doc, "max_retries", 0, MAX_RETRIES_LIMIT, default=0)
    priority = _int_field(doc, "priority", PRIORITY_MIN, PRIORITY_MAX, default=0)
    timeout_ms = _int_field(doc, "timeout_ms", 0, MAX_TIMEOUT_MS, default=None)
    if "run_at" in doc and "delay_ms" in doc:
        raise InvalidRequest("give run_at or delay_ms, not both", field="delay_ms")
    due_ms = None
    if "run_at" in doc:
        due_ms = _run_at(doc["run_at"], now_ms)
    elif "delay_ms" in doc:
        due_ms = now_ms + _int_field(doc, "delay_ms", 0, MAX_DELAY_MS, default=0)
    return JobRequest(job_id, payload, max_retries, priority, timeout_ms, due_ms)


@overload
def _int_field(doc: dict[str, Any], name: str, lo: int, hi: int, *, default: int) -> int: ...
@overload
def _int_field(doc: dict[str, Any], name: str, lo: int, hi: int, *, default: None) -> int | None: ...
def _int_field(doc: dict[str, Any], name: str, lo: int, hi: int, *, default: int | None) -> int | None:
    """A JSON integer lo..hi: `true`, `3.0`, `"3"` and `null` are not integers."""
    value = doc.get(name, _ABSENT)
    if value is _ABSENT:
        return default
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidRequest(
            f"{name} must be an integer {lo}..{hi}, got {_shown(value)}",
            field=name,
        )
    return value


def _run_at(value: object, now_ms: int) -> int:
    """`run_at` as epoch milliseconds (sub-millisecond digits dropped); at most a year ahead."""
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise InvalidRequest(
            "run_at must be an RFC 3339 time with an offset, such as 2026-11-29T02:01:19Z or "
            f"2026-11-29T04:01:19.5+02:00, got {_shown(value)}",
            field="run_at",
        )
    try:
        at = datetime.fromisoformat(value.upper())
    except ValueError as exc:  # the right shape, but no such time (month 13, 25:00, ...)
        raise InvalidRequest(f"run_at is not a valid time: {exc}", field="run_at") from None
    run_at_ms = (at - _EPOCH) // _ONE_MS
    if run_at_ms > now_ms + MAX_DELAY_MS:
        raise InvalidRequest(
            f"run_at must be at most a year ({MAX_DELAY_MS} ms) ahead, got {value}", field="run_at"
        )
    return run_at_ms


def _shown(value: object) -> str:
    """A field's value as the client wrote it, cut short: a message is not an echo chamber."""
    text = stdlib_json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def json_type(value: object) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)

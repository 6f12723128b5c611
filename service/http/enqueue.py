"""POST /enqueue: admit a job."""

from __future__ import annotations

import json as stdlib_json
import re
from typing import Any

from sanic import Blueprint, HTTPResponse, Request

from domain.errors import QueueFull
from domain.states import JobState
from service.engine import Draining
from service.http.errors import JSON, InvalidRequest, PayloadTooLarge, render_constant
from service.http.json_body import check_text, decode_object, may_hold_lone_surrogates
from service.parts import parts_of

bp = Blueprint("enqueue")

ID_PATTERN = re.compile(r"[A-Za-z0-9\-_.:@~]{1,128}")
MAX_RETRIES_LIMIT = 100
#: Each state's name as bytes, for the 202/200 body: Enum's `.value` is a property (~0.3 µs).
_STATE_BYTES = {state: state.value.encode() for state in JobState}


@bp.post("/enqueue")
async def enqueue(request: Request) -> HTTPResponse:
    parts = parts_of(request)
    engine = parts.engine
    if not engine.accepting:
        raise Draining()
    # Content-Type (JSON, or no body) and the token were checked by service/http/access.py.
    limit = parts.config.max_body_bytes
    if len(request.body) > limit:
        raise PayloadTooLarge(f"the body is {len(request.body)} bytes; the limit is {limit} (MAX_BODY_BYTES)")
    body = request.body
    job_id, payload, max_retries = parse_job(decode_object(body), escaped=may_hold_lone_surrogates(body))
    try:
        view, created = await engine.enqueue(job_id, payload, max_retries)
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
        return HTTPResponse(body, status=202, headers={"Location": "/jobs/" + view.id}, content_type=JSON)
    return HTTPResponse(body, status=200, content_type=JSON)


def parse_job(doc: dict[str, Any], *, escaped: bool = True) -> tuple[str, str, int]:
    """The job a decoded /enqueue body (or one job of a batch) asks for, or InvalidRequest
    naming the field at fault. `escaped=False`: the body held no `\\u` escape, so no string
    in `doc` can hold a lone surrogate (json_body.may_hold_lone_surrogates)."""
    if escaped:
        check_text(doc)
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

    max_retries = doc.get("max_retries", 0)
    if type(max_retries) is not int or not 0 <= max_retries <= MAX_RETRIES_LIMIT:
        raise InvalidRequest(
            f"max_retries must be an integer 0..{MAX_RETRIES_LIMIT}, got {stdlib_json.dumps(max_retries)}",
            field="max_retries",
        )
    return job_id, payload, max_retries


def json_type(value: object) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)

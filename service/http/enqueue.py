"""POST /enqueue: admit a job."""

from __future__ import annotations

import json as stdlib_json
import re

from sanic import Blueprint, HTTPResponse, Request, json

from domain.errors import QueueFull
from service.engine import Draining
from service.http.errors import InvalidRequest, PayloadTooLarge, render
from service.http.json_body import check_text, decode_object
from service.parts import parts_of

bp = Blueprint("enqueue")

ID_PATTERN = re.compile(r"[A-Za-z0-9\-_.:@~]{1,128}")
MAX_RETRIES_LIMIT = 100


@bp.post("/enqueue")
async def enqueue(request: Request) -> HTTPResponse:
    engine = parts_of(request).engine
    if not engine.accepting:
        raise Draining()
    # Content-Type (JSON, or no body) and the token were checked by service/http/access.py.
    limit = parts_of(request).config.max_body_bytes
    if len(request.body) > limit:
        raise PayloadTooLarge(f"the body is {len(request.body)} bytes; the limit is {limit} (MAX_BODY_BYTES)")
    job_id, payload, max_retries = parse_job(request.body)
    try:
        view, created = await engine.enqueue(job_id, payload, max_retries)
    except QueueFull as exc:
        # The one rejection that comes in floods: rendered here, from the same error
        # table, rather than through Sanic's exception path (~28% of a 429 request in
        # the profile, the response it sends included; docs/PERFORMANCE.md).
        response = render(exc)
        parts_of(request).metrics.count_rejection(request.method, request.path, response.status)
        return response
    if created:
        return json(
            {"status": view.state.value, "id": view.id}, status=202, headers={"Location": f"/jobs/{view.id}"}
        )
    return json({"status": view.state.value, "id": view.id}, status=200)


def parse_job(body: bytes) -> tuple[str, str, int]:
    """The job fields of an /enqueue body, or InvalidRequest naming what is wrong."""
    doc = decode_object(body)
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
        raise InvalidRequest(f"payload must be a string, got {_json_type(payload)}", field="payload")

    max_retries = doc.get("max_retries", 0)
    if type(max_retries) is not int or not 0 <= max_retries <= MAX_RETRIES_LIMIT:
        raise InvalidRequest(
            f"max_retries must be an integer 0..{MAX_RETRIES_LIMIT}, got {stdlib_json.dumps(max_retries)}",
            field="max_retries",
        )
    return job_id, payload, max_retries


def _json_type(value: object) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)

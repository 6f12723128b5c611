"""The floor kasp's POST /enqueue is measured against: the leanest honest Sanic app.

What a skilled engineer would write for the same contract: the same checks as
kasp's handler (Content-Type, MAX_BODY_BYTES, JSON object, id pattern, payload
string, max_retries integer 0..100; 200 for an identical re-send, 409 for a
different one, 429 past QUEUE_SIZE), ujson (what Sanic's `request.json` uses),
constant answers prebuilt as bytes, a dict as the store. With BASELINE_WORKERS > 0
it also runs the bare shared-machine loop (bench/baselines/shared_machine.py) for
the HTTP engine scenario. ujson, unlike kasp's decoder, accepts NaN/Infinity; no
field kasp reads can hold one. No event log, no projection, no error table, no logging.
"""

from __future__ import annotations

import os
import re

import ujson
from sanic import Request, Sanic
from sanic.response import HTTPResponse

from bench.baselines.shared_machine import BareQueue
from domain.processor import SimulatedProcessor

ID_PATTERN = re.compile(r"[A-Za-z0-9\-_.:@~]{1,128}")
MAX_BODY_BYTES = 1_048_576  # kasp's MAX_BODY_BYTES default (service/config.py)
JSON = "application/json"


def _answer(status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> HTTPResponse:
    return HTTPResponse(ujson.dumps(body), status=status, headers=headers, content_type=JSON)


def _bad(code: str, message: str, field: str = "") -> HTTPResponse:
    return _answer(400, {"error": code, "message": message, **({"field": field} if field else {})})


def _is_json(media: str) -> bool:
    kind = media.split(";", 1)[0].strip().lower()
    return kind == JSON or (kind.startswith("application/") and kind.endswith("+json"))


# Constant answers, encoded once (a new HTTPResponse per request: Sanic's response objects are not shared).
FULL = ujson.dumps({"error": "queue_full", "message": "the queue is full (QUEUE_SIZE)"}).encode()
READY = b'{"status":"ready"}'


def create_app() -> Sanic:
    app = Sanic("kasp_baseline")
    capacity = int(os.environ.get("QUEUE_SIZE", "64"))
    workers = int(os.environ.get("BASELINE_WORKERS", "0"))
    jobs: dict[str, tuple[str, int]] = {}
    bare: BareQueue | None = None

    @app.before_server_start
    async def start(app: Sanic) -> None:
        nonlocal bare
        if workers:
            bare = BareQueue(SimulatedProcessor(min_ms=0, max_ms=0, error_rate=0), workers=workers)
            bare.start()

    @app.get("/readyz")
    async def ready(request: Request) -> HTTPResponse:
        return HTTPResponse(READY, content_type=JSON)

    @app.get("/stats")
    async def stats(request: Request) -> HTTPResponse:
        return _answer(200, {"stored": len(jobs), "done": bare.done if bare else 0})  # type: ignore[dict-item]

    @app.post("/enqueue")
    async def enqueue(request: Request) -> HTTPResponse:
        media = request.headers.get("content-type")
        if media is not None and not _is_json(media):
            return _answer(415, {"error": "unsupported_media_type", "message": "expected application/json"})
        if len(request.body) > MAX_BODY_BYTES:
            return _answer(413, {"error": "payload_too_large", "message": "the body is too large"})
        try:
            doc = ujson.loads(request.body)
        except ValueError:
            return _bad("invalid_json", "the body is not valid JSON")
        if not isinstance(doc, dict):
            return _bad("invalid_json", "the body must be a JSON object")
        job_id, payload, max_retries = doc.get("id"), doc.get("payload"), doc.get("max_retries", 0)
        if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
            return _bad("invalid_field", "id must be 1-128 characters from A-Z a-z 0-9 - _ . : @ ~", "id")
        if not isinstance(payload, str):
            return _bad("invalid_field", "payload must be a string", "payload")
        if type(max_retries) is not int or not 0 <= max_retries <= 100:
            return _bad("invalid_field", "max_retries must be an integer 0..100", "max_retries")
        # The id matched ID_PATTERN, so it needs no JSON escaping.
        body = b'{"status":"queued","id":"' + job_id.encode() + b'"}'
        known = jobs.get(job_id)
        if known is not None:
            if known != (payload, max_retries):
                return _answer(409, {"error": "conflict", "message": "this id has different content"})
            return HTTPResponse(body, content_type=JSON)
        if (bare.pending if bare else len(jobs)) >= capacity:
            return HTTPResponse(FULL, status=429, headers={"Retry-After": "1"}, content_type=JSON)
        jobs[job_id] = (payload, max_retries)
        if bare is not None:
            bare.enqueue(job_id, payload, max_retries)
        return HTTPResponse(body, status=202, headers={"Location": "/jobs/" + job_id}, content_type=JSON)

    return app

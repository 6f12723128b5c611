"""The floor kasp's POST /enqueue is measured against: a minimal Sanic app.

It parses and validates the same JSON body as kasp (id pattern, payload string,
max_retries integer 0..100), stores the job in a dict and answers 202, or 429
once QUEUE_SIZE jobs are stored. With BASELINE_WORKERS > 0 it also runs the
bare shared-machine loop (bench/baselines/shared_machine.py) so the HTTP engine
scenario has a baseline too. Nothing else: no event log, no projection, no
error table, no logging.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from sanic import Request, Sanic
from sanic.response import HTTPResponse
from sanic.response import json as json_response

from bench.baselines.shared_machine import BareQueue
from domain.processor import SimulatedProcessor

ID_PATTERN = re.compile(r"[A-Za-z0-9\-_.:@~]{1,128}")


def _bad(field: str, message: str) -> HTTPResponse:
    return json_response({"error": "invalid_field", "message": message, "field": field}, status=400)


def create_app() -> Sanic:
    app = Sanic("kasp_baseline")
    capacity = int(os.environ.get("QUEUE_SIZE", "64"))
    workers = int(os.environ.get("BASELINE_WORKERS", "0"))
    jobs: dict[str, tuple[str, int]] = {}
    app.ctx.bare = None

    @app.before_server_start
    async def start(app: Sanic) -> None:
        if workers:
            app.ctx.bare = BareQueue(SimulatedProcessor(min_ms=0, max_ms=0, error_rate=0), workers=workers)
            app.ctx.bare.start()

    @app.get("/readyz")
    async def ready(request: Request) -> HTTPResponse:
        return json_response({"status": "ready"})

    @app.get("/stats")
    async def stats(request: Request) -> HTTPResponse:
        bare = app.ctx.bare
        done = bare.done if bare is not None else 0
        return json_response({"stored": len(jobs), "done": done})

    @app.post("/enqueue")
    async def enqueue(request: Request) -> HTTPResponse:
        try:
            doc: Any = json.loads(request.body)
        except ValueError:
            return json_response({"error": "invalid_json", "message": "not JSON"}, status=400)
        if not isinstance(doc, dict):
            return json_response({"error": "invalid_json", "message": "not an object"}, status=400)
        job_id = doc.get("id")
        if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
            return _bad("id", "id must be 1-128 characters from A-Z a-z 0-9 - _ . : @ ~")
        payload = doc.get("payload")
        if not isinstance(payload, str):
            return _bad("payload", "payload must be a string")
        max_retries = doc.get("max_retries", 0)
        if type(max_retries) is not int or not 0 <= max_retries <= 100:
            return _bad("max_retries", "max_retries must be an integer 0..100")
        known = jobs.get(job_id)
        if known is not None:
            if known != (payload, max_retries):
                return json_response({"error": "conflict", "message": "different content"}, status=409)
            return json_response({"status": "queued", "id": job_id})
        bare = app.ctx.bare
        pending = len(jobs) if bare is None else bare.pending
        if pending >= capacity:
            return json_response(
                {"error": "queue_full", "message": "the queue is full"},
                status=429,
                headers={"Retry-After": "1"},
            )
        jobs[job_id] = (payload, max_retries)
        if bare is not None:
            bare.enqueue(job_id, payload, max_retries)
        return json_response(
            {"status": "queued", "id": job_id}, status=202, headers={"Location": f"/jobs/{job_id}"}
        )

    return app

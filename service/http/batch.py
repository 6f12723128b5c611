"""POST /enqueue/batch: up to 1,000 jobs in one request, the accepted ones in one commit.

Each job is judged exactly as POST /enqueue judges one sent alone, in order: the
same parsing (`enqueue.parse_job`), the same rules (`Engine.enqueue_many`: the
store core judges each job as if alone, so an id seen earlier in the batch is a
re-send of it, and commits the accepted ones together) and the same error table
(`errors.describe`) for each refused job's answer. Only the envelope is this
module's own: a body that is not `{"jobs": [1..1000 items]}` is refused whole.
"""

from __future__ import annotations

from typing import Any

from sanic import Blueprint, HTTPResponse, Request, json

from domain.errors import KaspError
from service.clock import now_ms
from service.engine import JobRequest
from service.http.enqueue import ID_PATTERN, admit_body, json_type, parse_job
from service.http.errors import InvalidRequest, describe
from service.http.json_body import decode_object, may_hold_lone_surrogates

bp = Blueprint("enqueue_batch")

MAX_BATCH_JOBS = 1000  # SPEC.md, POST /enqueue/batch
BATCH_FIELDS = ("jobs",)


@bp.post("/enqueue/batch")
async def enqueue_batch(request: Request) -> HTTPResponse:
    parts = admit_body(request)
    engine = parts.engine
    items = parse_batch(decode_object(request.body))
    escaped = may_hold_lone_surrogates(request.body)
    at_ms = now_ms()  # one clock reading for the whole batch: every job judged at the same time
    results: list[dict[str, Any]] = [{}] * len(items)
    jobs: list[JobRequest] = []
    places: list[int] = []  # the index in `items` of each entry of `jobs`
    for i, item in enumerate(items):
        try:
            jobs.append(parse_item(item, now_ms=at_ms, escaped=escaped))
            places.append(i)
        except InvalidRequest as exc:
            results[i] = refused(id_of(item), exc)
    outcomes = await engine.enqueue_many(jobs) if jobs else []
    for i, job, outcome in zip(places, jobs, outcomes, strict=True):
        if isinstance(outcome, KaspError):
            results[i] = refused(job.id, outcome)
        else:
            view, created = outcome
            results[i] = {"id": view.id, "status": 202 if created else 200, "state": view.state.value}
    for result in results:
        if result["status"] >= 400:
            parts.metrics.count_enqueue_rejection(result["status"])
    return json({"results": results})


def parse_batch(doc: dict[str, Any]) -> list[Any]:
    """The items of a decoded batch body, or InvalidRequest refusing the whole request."""
    for name in doc:
        if name not in BATCH_FIELDS:
            raise InvalidRequest(
                f"unknown field {name!r}; a batch body has only jobs", field=name, code="unknown_field"
            )
    items = doc.get("jobs")
    if not isinstance(items, list):
        got = "nothing" if "jobs" not in doc else json_type(items)
        raise InvalidRequest(f"jobs must be an array of 1..{MAX_BATCH_JOBS} jobs, got {got}", field="jobs")
    if not 1 <= len(items) <= MAX_BATCH_JOBS:
        advice = f"; split it into batches of at most {MAX_BATCH_JOBS}" if items else ""
        raise InvalidRequest(
            f"jobs must hold 1..{MAX_BATCH_JOBS} jobs, got {len(items)}{advice}", field="jobs"
        )
    return items


def parse_item(item: Any, *, now_ms: int, escaped: bool) -> JobRequest:
    """One job of the batch, exactly as POST /enqueue parses a body that holds it."""
    if not isinstance(item, dict):
        raise InvalidRequest(f"a job must be a JSON object, got {json_type(item)}", code="invalid_json")
    return parse_job(item, now_ms=now_ms, escaped=escaped)


def id_of(item: Any) -> str | None:
    """The id a refused job is answered with: the one it gave when that is a valid id, else null
    (the result's place in `results` still says which job it is)."""
    job_id = item.get("id") if isinstance(item, dict) else None
    return job_id if isinstance(job_id, str) and ID_PATTERN.fullmatch(job_id) else None


def refused(job_id: str | None, exc: BaseException) -> dict[str, Any]:
    """A refused job's result: its id, the status POST /enqueue would have answered, and the
    error body from the one error table."""
    status, body, _ = describe(exc)
    return {"id": job_id, "status": status, **body}

"""/jobs: read jobs (or wait for one to finish), cancel them, send them back to the queue."""

from __future__ import annotations

from urllib.parse import unquote

from sanic import Blueprint, HTTPResponse, Request, json

from domain.errors import UnknownJob
from domain.states import FINISHED_STATES, JobState
from service.http.enqueue import ID_PATTERN
from service.http.query import enum_param, int_param, seconds_param
from service.parts import parts_of

bp = Blueprint("jobs")

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_CURSOR = 10**18
MAX_WAIT_S = 60  # SPEC.md, Reading: ?wait= is 0..60 seconds (under Sanic's 60 s RESPONSE_TIMEOUT)

#: The path parameter type of every job route (`<job_id:job_id>`), registered on the app's
#: router by service/app.py: one place decodes and checks a job id taken from a path.
JOB_ID_PARAM = "job_id"


def job_id_from_path(segment: str) -> str:
    """The job id in a path segment, percent-decoded exactly once (RFC 3986 §2.4: after the
    path is split, so `%2F` is part of the segment), as `encodeURIComponent` sends it.
    ValueError (the route does not match: 404) for what can be no job's id, which so never
    reaches a store (a `%00` would otherwise be a NUL in a PostgreSQL query)."""
    job_id = unquote(segment, errors="strict")
    if not ID_PATTERN.fullmatch(job_id):
        raise ValueError(f"not a job id: {segment!r}")
    return job_id


@bp.get("/jobs/<job_id:job_id>")
async def get_job(request: Request, job_id: str) -> HTTPResponse:
    wait_s = seconds_param(request, "wait", lo=0, hi=MAX_WAIT_S)
    parts = parts_of(request)
    view = await parts.store.get_job(job_id)
    if view is not None and wait_s and view.state not in FINISHED_STATES:
        view = await parts.waiters.wait_finished(job_id, wait_s, parts.store.get_job)
    if view is None:
        raise UnknownJob(job_id)
    return json(view.to_dict())


@bp.get("/jobs")
async def list_jobs(request: Request) -> HTTPResponse:
    state = enum_param(request, "state", JobState)
    limit = int_param(request, "limit", default=DEFAULT_PAGE, lo=1, hi=MAX_PAGE)
    cursor = int_param(request, "cursor", default=0, lo=0, hi=MAX_CURSOR)
    page = await parts_of(request).store.list_jobs(state=state, limit=limit, cursor=cursor)
    next_cursor = str(page.next_cursor) if page.next_cursor is not None else None
    return json({"jobs": [v.to_dict() for v in page.jobs], "next_cursor": next_cursor})


@bp.get("/jobs/<job_id:job_id>/events")
async def job_events(request: Request, job_id: str) -> HTTPResponse:
    events = await parts_of(request).store.job_events(job_id)
    if events is None:
        raise UnknownJob(job_id)
    return json({"events": [e.to_dict() for e in events]})


@bp.post("/jobs/<job_id:job_id>/retry")
async def retry_job(request: Request, job_id: str) -> HTTPResponse:
    view = await parts_of(request).engine.requeue(job_id)  # UnknownJob -> 404, InvalidTransition -> 409
    return json(
        {"status": view.state.value, "id": view.id}, status=202, headers={"Location": f"/jobs/{view.id}"}
    )


@bp.post("/jobs/<job_id:job_id>/cancel")
async def cancel_job(request: Request, job_id: str) -> HTTPResponse:
    # UnknownJob -> 404, InvalidTransition (finished) -> 409
    view, was_running = await parts_of(request).engine.cancel(job_id)
    if was_running:  # recorded; the pool running the attempt is cancelling its task
        return json({"status": "cancelling", "id": view.id}, status=202)
    return json({"status": view.state.value, "id": view.id}, status=200)

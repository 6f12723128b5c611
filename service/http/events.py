"""/events: page through the whole event log in seq order."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json

from domain.states import EventType
from service.http.query import enum_param, int_param, str_param
from service.parts import parts_of

bp = Blueprint("events")

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_SEQ = 10**18


@bp.get("/events")
async def read_events(request: Request) -> HTTPResponse:
    after = int_param(request, "after", default=0, lo=0, hi=MAX_SEQ)
    limit = int_param(request, "limit", default=DEFAULT_PAGE, lo=1, hi=MAX_PAGE)
    job_id = str_param(request, "job_id")
    event_type = enum_param(request, "type", EventType)
    events = await parts_of(request).store.read_events(
        after=after, limit=limit, job_id=job_id, type=event_type
    )
    next_after = events[-1].seq if events else after
    return json({"events": [e.to_dict() for e in events], "next_after": next_after})

"""/stats: counters for operators, read from the projection (no scans)."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json

from domain.states import JobState
from service.parts import parts_of

bp = Blueprint("stats")


@bp.get("/stats")
async def stats(request: Request) -> HTTPResponse:
    ctx = parts_of(request)
    s = await ctx.store.stats()
    return json(
        {
            "accepting": ctx.engine.accepting,
            "queue": {"depth": s.ready, "capacity": ctx.config.queue_size, "delayed": s.delayed},
            "workers": {"size": ctx.pool.live_workers, "busy": ctx.pool.busy},
            "jobs": {state.value: s.jobs.get(state, 0) for state in JobState},
            "events": {"count": s.event_count, "last_seq": s.last_seq},
        }
    )

"""GET /metrics: Prometheus exposition (text format, or OpenMetrics when asked for)."""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from sanic import Blueprint, HTTPResponse, Request
from sanic.response import raw

from service.http.access import OPEN
from service.metrics import Levels
from service.parts import parts_of

bp = Blueprint("metrics")


@bp.get("/metrics", ctx_access=OPEN)
async def metrics(request: Request) -> HTTPResponse:
    ctx = parts_of(request)
    stats = await ctx.store.stats()
    levels = Levels(
        store=stats,
        queue_capacity=ctx.config.queue_size,
        workers=ctx.pool.size,
        workers_busy=ctx.pool.busy,
        accepting=ctx.engine.accepting,
        streams=len(ctx.feed.subscriptions),
        streams_dropped=ctx.feed.dropped,
    )
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return raw(ctx.metrics.render(levels, encoder), content_type=content_type)

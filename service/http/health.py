"""Liveness and readiness probes."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json

from service.http.access import OPEN

bp = Blueprint("health")


@bp.get("/healthz", ctx_access=OPEN)
async def healthz(request: Request) -> HTTPResponse:
    return json({"status": "ok"})


@bp.get("/readyz", ctx_access=OPEN)
async def readyz(request: Request) -> HTTPResponse:
    parts = getattr(request.app.ctx, "parts", None)  # absent until the store is open
    if parts is not None and not parts.engine.accepting:
        return json({"status": "draining"}, status=503)
    if parts is None or not request.app.ctx.ready:
        return json({"status": "starting"}, status=503)
    health = parts.store.health
    if not health.available:
        body = {"status": "store_unavailable", "since_ms": health.since_ms, "error": health.last_error}
        return json(body, status=503)
    if parts.pool.live_workers < parts.pool.size:  # a worker died and is not yet replaced
        return json({"status": "degraded"}, status=503)
    return json({"status": "ready"})

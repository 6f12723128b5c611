"""Liveness and readiness probes."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request, json

bp = Blueprint("health")


@bp.get("/healthz")
async def healthz(request: Request) -> HTTPResponse:
    return json({"status": "ok"})


@bp.get("/readyz")
async def readyz(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    if not ctx.engine.accepting:
        return json({"status": "draining"}, status=503)
    if not getattr(ctx, "ready", False):
        return json({"status": "starting"}, status=503)
    return json({"status": "ready"})

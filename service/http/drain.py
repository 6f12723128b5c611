"""POST /drain: stop taking new work, as SIGTERM does, but keep the process (and reads) up.

What `sanic inspect kasp_drain` calls (service/inspector.py). From the call on,
/enqueue and /readyz answer 503 and no new attempt starts; attempts already
running finish, or are recorded `interrupted` after SHUTDOWN_TIMEOUT. The
process keeps serving reads until it is stopped; a later SIGTERM finds the
pool already stopped and exits at once. There is no "undrain": restart.
"""

from __future__ import annotations

import asyncio
import logging

from sanic import Blueprint, HTTPResponse, Request, json

from service.parts import parts_of

log = logging.getLogger("kasp")
bp = Blueprint("drain")

#: drains in progress: held so the loop does not drop the task before it ends
_DRAINS: set[asyncio.Task[None]] = set()


@bp.post("/drain")
async def drain(request: Request) -> HTTPResponse:
    parts = parts_of(request)
    if parts.engine.accepting:
        parts.engine.accepting = False
        log.info(
            "draining on request: no new jobs or attempts; %d attempts running",
            parts.pool.busy,
            extra={"action": "drain_requested"},
        )
        task = asyncio.create_task(
            parts.pool.stop(timeout_s=parts.config.shutdown_timeout), name="kasp-drain-on-request"
        )
        _DRAINS.add(task)
        task.add_done_callback(_DRAINS.discard)
    return json({"status": "draining", "running": parts.pool.busy}, status=202)

"""kasp's own work per POST /enqueue, in process: CPU µs per request, against the baseline's handler.

Calls the /enqueue route's handler (kasp's includes the access check, and any
app-level request middleware is called first, as older checkouts decided access
there), or the baseline app's handler, on prebuilt Sanic `Request`s with unique ids and a 100-byte payload,
the store and engine real (memory store, pool not started). Sanic's own
request and response code is left out: it is the same for both sides. CPU time
of this process per request, which other tenants of a shared machine move far
less than a server's req/s (docs/PERFORMANCE.md, Issue 12).

Usage: python bench/handler_cost.py kasp|baseline [REQUESTS] [QUEUE_SIZE]
(defaults 50,000 and 10,000,000: the 202 path; QUEUE_SIZE=0 measures the 429 path)
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from inspect import isawaitable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sanic import Request  # noqa: E402
from sanic.compat import Header  # noqa: E402


def _request(app: Any, route: Any, i: int) -> Request:
    body = b'{"id":"job-%d","payload":"%s","max_retries":3}' % (i, b"p" * 100)
    headers = Header({"host": "127.0.0.1:8080", "content-type": "application/json"})
    request = Request(b"/enqueue", headers, "1.1", "POST", None, app)  # type: ignore[arg-type]
    request.body = body
    request.route = route
    return request


async def measure(which: str, n: int, queue_size: int) -> float:
    middleware: list[Any] = []
    if which == "baseline":
        from bench.baselines.enqueue_app import create_app

        os.environ["QUEUE_SIZE"] = str(queue_size)
        app: Any = create_app()
    else:
        from service.app import create_app as create_kasp
        from service.parts import build_parts

        app = create_kasp(environ={"QUEUE_SIZE": str(queue_size)})
        app.ctx.parts = await build_parts(app.ctx.config)
        middleware = list(app.request_middleware)
    app.router.finalize()
    route, handler, _ = app.router.get("/enqueue", "POST", None)
    requests = [_request(app, route, i) for i in range(n)]
    gc.collect()
    gc.freeze()
    began = time.process_time()
    for request in requests:
        for call in middleware:
            decided = call(request)
            if isawaitable(decided):  # an older, asynchronous check
                await decided
        response = handler(request)
        if isawaitable(response):
            await response
    return (time.process_time() - began) / n * 1e6


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "kasp"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
    queue_size = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000_000
    cost = asyncio.run(measure(which, n, queue_size))
    print(f"{which}: {cost:.2f} CPU µs per POST /enqueue (QUEUE_SIZE={queue_size})")


if __name__ == "__main__":
    main()

"""kasp's burn-down phases (runs from the project's .venv; see phases.py).

In process: `build_parts` with a PostgreSQL Config (WORKERS=CONCURRENCY) and a
no-op processor, exactly what the service builds. Enqueue: `Engine.enqueue_many`
for each CHUNK of jobs (kasp's batch API: one commit a chunk), chunk after chunk.
Process: the WorkerPool until every job is done.

Over HTTP (`enqueue-http --url URL`): CONNECTIONS keep-alive connections post
the jobs to a running kasp as POST /enqueue/batch requests of JOBS_PER_REQUEST
jobs, each connection taking the next request from a shared iterator; every job
of every answer must be 202 or 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from phases import CHUNK, CONCURRENCY, PAYLOAD, Countdown, chunks, main  # noqa: E402

from domain.events import Event  # noqa: E402
from domain.processor import SimulatedProcessor  # noqa: E402
from domain.states import EventType  # noqa: E402
from service.config import load  # noqa: E402
from service.engine import JobRequest  # noqa: E402
from service.parts import Parts, build_parts  # noqa: E402

#: Client connections for the HTTP enqueue: as bench/batch.py drives POST /enqueue/batch (a guess: enough
#: to keep one batch in commit while the next is parsed).
CONNECTIONS = 8


def environment(dsn: str) -> dict[str, str]:
    """kasp's settings for the burn-down (also the environment of the HTTP server)."""
    return {
        "STORE": dsn,
        "WORKERS": str(CONCURRENCY),
        "QUEUE_SIZE": "10000000",
        "WORK_MIN_MS": "0",
        "WORK_MAX_MS": "0",
        "ERROR_RATE": "0",
        "LOG_LEVEL": "WARNING",
    }


async def parts_for(dsn: str) -> Parts:
    noop = SimulatedProcessor(min_ms=0, max_ms=0, error_rate=0)
    return await build_parts(load(environment(dsn)), processor=noop)


async def setup(dsn: str, jobs: int) -> dict[str, float]:
    parts = await parts_for(dsn)  # opening the store migrates the schema
    await parts.store.close()
    return {}


async def enqueue(dsn: str, jobs: int) -> dict[str, float]:
    parts = await parts_for(dsn)
    try:
        engine = parts.engine
        began = time.perf_counter()
        for batch in chunks(jobs):
            for outcome in await engine.enqueue_many([JobRequest(f"job-{i}", PAYLOAD) for i in batch]):
                if isinstance(outcome, Exception):
                    raise outcome
        return {"seconds": time.perf_counter() - began}
    finally:
        await parts.store.close()


async def process(dsn: str, jobs: int) -> dict[str, float]:
    parts = await parts_for(dsn)
    countdown = Countdown(jobs)

    def count(event: Event) -> None:
        if event.type is EventType.SUCCEEDED:
            countdown.tick()

    parts.store.add_listener(count)
    try:
        began = time.perf_counter()
        parts.pool.start()
        await countdown.wait()
        seconds = time.perf_counter() - began
        await parts.pool.stop(timeout_s=10)
    finally:
        await parts.store.close()
    return {"seconds": seconds, "processed": jobs - countdown.left}


# -- over HTTP ------------------------------------------------------------------


def enqueue_request(job_numbers: range) -> bytes:
    """One POST /enqueue/batch request holding these jobs."""
    jobs = [{"id": f"job-{i}", "payload": PAYLOAD, "max_retries": 0} for i in job_numbers]
    body = json.dumps({"jobs": jobs}).encode()
    head = "POST /enqueue/batch HTTP/1.1\r\nHost: kasp\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


JOBS_PER_REQUEST = CHUNK  # the same 1,000 a call as every system's batch API here


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _connection(host: str, port: int, requests: Iterator[range]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for numbers in requests:
            writer.write(enqueue_request(numbers))
            status, body = await _read_response(reader)
            refused = (
                [r for r in json.loads(body)["results"] if r["status"] not in (200, 202)]
                if status == 200
                else []
            )
            if status != 200 or refused:
                raise RuntimeError(f"POST /enqueue/batch answered {status} for jobs {numbers}: {refused[:3]}")
    finally:
        writer.close()


async def enqueue_http(url: str, jobs: int) -> dict[str, float]:
    host, _, port = url.removeprefix("http://").partition(":")
    requests = iter([range(i, min(jobs, i + JOBS_PER_REQUEST)) for i in range(0, jobs, JOBS_PER_REQUEST)])
    began_at, began = time.time(), time.perf_counter()
    await asyncio.gather(*(_connection(host, int(port), requests) for _ in range(CONNECTIONS)))
    return {"seconds": time.perf_counter() - began, "began_at": began_at, "ended_at": time.time()}


if __name__ == "__main__":
    if sys.argv[1:2] == ["enqueue-http"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("phase")
        parser.add_argument("--url", required=True)
        parser.add_argument("--jobs", type=int, required=True)
        args = parser.parse_args()
        print(json.dumps(uvloop.run(enqueue_http(args.url, args.jobs))), flush=True)
    else:
        main({"setup": setup, "enqueue": enqueue, "process": process})

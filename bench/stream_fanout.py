"""Benchmark: does a crowd of /events/stream subscribers slow the workers?

Starts kasp in a subprocess (single process, memory store, 8 workers, 1-3 ms
simulated attempts), opens K subscribers that read every event (raw sockets,
in a process of their own), enqueues N jobs from this process, and prints the
time from the first enqueue until every job is done and until every subscriber
has the last event, and the server's CPU time. Compare the rows of one run:
the machine is shared, only ratios mean anything.

    .venv/bin/python bench/stream_fanout.py [--jobs 2000] [--subscribers 0,50,200]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(
    jobs: int, *, env: dict[str, str] | None = None, pin: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """kasp on a free port (8 workers, 1-3 ms attempts unless `env` says otherwise), `pin`
    (a taskset prefix) in front of it."""
    port = free_port()
    env = {
        **os.environ,
        "WORKERS": "8",
        "QUEUE_SIZE": str(jobs),
        "WORK_MIN_MS": "1",
        "WORK_MAX_MS": "3",
        "ERROR_RATE": "0",
        "LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [*(pin or []), sys.executable, "-m", "sanic", "service.app:create_app", "--factory",
         "--single-process", "-H", "127.0.0.1", "-p", str(port), "--no-motd"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("kasp did not become ready within 20 s")


async def read_streams(port: int, subscribers: int, marker: bytes, opened: Event, done: Queue[int]) -> None:
    """K raw-socket subscribers (cheap readers: the figures are the server's), each until `marker`."""

    async def subscribe() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /events/stream HTTP/1.1\r\nHost: bench\r\n\r\n")
        received, tail = 0, b""
        first = True
        while chunk := await reader.read(1 << 16):
            if first:
                ready.release()
                first = False
            received += len(chunk)
            if marker in tail + chunk:
                writer.close()
                return received
            tail = chunk[-len(marker) :]
        raise RuntimeError("stream ended early")

    ready = asyncio.Semaphore(0)
    tasks = [asyncio.create_task(subscribe()) for _ in range(subscribers)]
    for _ in range(subscribers):
        await ready.acquire()
    opened.set()
    done.put(sum(await asyncio.gather(*tasks)))


def reader_process(port: int, subscribers: int, marker: bytes, opened: Event, done: Queue[int]) -> None:
    asyncio.run(read_streams(port, subscribers, marker, opened, done))


async def enqueue_all(url: str, jobs: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        began = time.monotonic()
        for start in range(0, jobs, 20):
            await asyncio.gather(
                *(
                    client.post("/enqueue", json={"id": f"b{i}", "payload": ""})
                    for i in range(start, start + 20)
                )
            )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if (await client.get("/stats")).json()["jobs"]["done"] >= jobs:
                return began
            await asyncio.sleep(0.01)
        raise SystemExit("the jobs did not finish within 600 s")


def run(url: str, jobs: int, subscribers: int) -> tuple[float, float, int]:
    """Seconds until every job is done, until every subscriber has the last event, and bytes streamed."""
    port = int(url.rsplit(":", 1)[1])
    marker = f"id: {jobs * 3}\n".encode()
    ctx = multiprocessing.get_context("spawn")
    opened, done = ctx.Event(), ctx.Queue()
    readers = ctx.Process(target=reader_process, args=(port, subscribers, marker, opened, done))
    readers.start()
    try:
        if not opened.wait(30):
            raise SystemExit("the subscribers did not connect within 30 s")
        began = asyncio.run(enqueue_all(url, jobs))
        all_done = time.monotonic() - began
        streamed = done.get(timeout=600) if subscribers else 0
        all_delivered = time.monotonic() - began
    finally:
        readers.join(10)
        if readers.is_alive():
            readers.kill()
    return all_done, all_delivered, streamed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--subscribers", default="0,50,200")
    args = parser.parse_args()
    print(f"{args.jobs} jobs (3 events each), 8 workers, attempts of 1-3 ms")
    print(
        f"{'subscribers':>11} {'all done (s)':>13} {'jobs/s':>8} {'all delivered (s)':>18} "
        f"{'MB streamed':>12} {'server CPU (s)':>15}"
    )
    for subscribers in (int(k) for k in args.subscribers.split(",")):
        proc, url = start_service(args.jobs)
        try:
            cpu_before = cpu_seconds(proc.pid)
            done_s, delivered_s, streamed = run(url, args.jobs, subscribers)
            cpu = cpu_seconds(proc.pid) - cpu_before
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        print(
            f"{subscribers:>11} {done_s:>13.2f} {args.jobs / done_s:>8.0f} {delivered_s:>18.2f} "
            f"{streamed / 1e6:>12.1f} {cpu:>15.2f}"
        )


if __name__ == "__main__":
    main()

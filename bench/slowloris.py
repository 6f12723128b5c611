"""Benchmark: does kasp keep serving while slowloris clients hold connections open?

Starts kasp in a subprocess (single process, memory store) whose file-descriptor
limit is 1,024, soft and hard (so raising the soft limit at start changes
nothing). A second process opens `--connections` slowloris clients: each sends
a partial request head, then one more byte every `--interval` seconds, never
finishing it; a client the server closes reconnects at its next tick, as the
classic tool does. Meanwhile this process sends `GET /healthz` and
`POST /enqueue`, each on a fresh connection (the worst case: every probe needs a
new descriptor), first with no attack (baseline), then under it, and prints
latency percentiles, failures, and the server's descriptor count.

    .venv/bin/python bench/slowloris.py [--connections 2000] [--seconds 20] [--interval 4]

SERVER_LOG=path appends the server's output there (it is discarded otherwise).

The machine is shared: compare the baseline and attack rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_NOFILE = 1024  # the common default soft limit (issue 10, item 9)
PROBE_TIMEOUT_S = 5.0
HEALTH_EVERY_S = 0.05  # 20 health probes a second
ENQUEUE_EVERY_S = 0.1  # 10 enqueues a second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_NOFILE, SERVER_NOFILE))


def start_service() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "WORKERS": "4",
        "QUEUE_SIZE": "1000000",
        "WORK_MIN_MS": "1",
        "WORK_MAX_MS": "5",
        "ERROR_RATE": "0",
        "LOG_LEVEL": "WARNING",
    }
    with open(os.environ.get("SERVER_LOG", os.devnull), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sanic", "service.app:create_app", "--factory", "--single-process",
             "-H", "127.0.0.1", "-p", str(port), "--no-motd"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True, preexec_fn=_limit_fds,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _ = asyncio.run(
            _request(port, b"GET /readyz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        )
        if status == 200:
            return proc, port
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("kasp did not become ready within 20 s")


async def _request(port: int, data: bytes) -> tuple[int | None, float]:
    """(status or None on failure, seconds) for one request on a fresh connection."""
    began = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            head = await reader.readuntil(b"\r\n")
            status = int(head.split(b" ", 2)[1])
            await reader.read()  # Connection: close: the whole answer, until EOF
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
        status = None
    finally:
        if writer is not None:
            writer.close()
    return status, time.perf_counter() - began


# -- the attack, in a process of its own -------------------------------------


def attack(port: int, connections: int, interval_s: float, ready: Event, stop: Event, out: object) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, connections + 1024)), hard))
    asyncio.run(_attack(port, connections, interval_s, ready, stop, out))


async def _attack(
    port: int, connections: int, interval_s: float, ready: Event, stop: Event, out: object
) -> None:
    counts = {"opened": 0, "refused": 0, "closed_by_server": 0, "bytes": 0}
    halt = asyncio.Event()
    all_tried = asyncio.Event()

    async def slot(n: int) -> None:
        while not halt.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                counts["refused"] += 1
                if counts["opened"] + counts["refused"] >= connections:
                    all_tried.set()
                await asyncio.sleep(interval_s)
                continue
            counts["opened"] += 1
            if counts["opened"] + counts["refused"] >= connections:
                all_tried.set()
            head = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow-%d: " % n
            writer.write(head)
            counts["bytes"] += len(head)
            eof = asyncio.ensure_future(reader.read(65536))
            while not halt.is_set():
                done, _ = await asyncio.wait(
                    {eof, halt_wait}, timeout=interval_s, return_when="FIRST_COMPLETED"
                )
                if eof in done:
                    counts["closed_by_server"] += 1
                    await asyncio.sleep(interval_s)  # reconnect at the next tick, as the tool does
                    break
                with contextlib.suppress(OSError):
                    writer.write(b"a")  # one byte a tick, never the end of the head
                    counts["bytes"] += 1
            eof.cancel()
            writer.close()

    halt_wait = asyncio.ensure_future(halt.wait())
    tasks = [asyncio.create_task(slot(n)) for n in range(connections)]
    await all_tried.wait()
    ready.set()
    began = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    counts["seconds"] = int(time.monotonic() - began)
    halt.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    out.put(counts)  # type: ignore[attr-defined]


# -- probes ------------------------------------------------------------------


@dataclass
class Probes:
    health_s: list[float] = field(default_factory=list)
    health_failed: int = 0
    enqueue_s: list[float] = field(default_factory=list)
    enqueue_failed: int = 0  # no answer, or anything but 202
    server_fds_max: int = 0


async def probe(port: int, pid: int, seconds: float, tag: str) -> Probes:
    result = Probes()
    n = 0

    async def health() -> None:
        status, took = await _request(port, b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        if status == 200:
            result.health_s.append(took)
        else:
            result.health_failed += 1

    async def enqueue(i: int) -> None:
        body = b'{"id":"%s-%d","payload":"x"}' % (tag.encode(), i)
        data = (
            b"POST /enqueue HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        status, took = await _request(port, data)
        if status == 202:
            result.enqueue_s.append(took)
        else:
            result.enqueue_failed += 1

    pending: set[asyncio.Task[None]] = set()
    began = time.monotonic()
    next_health = next_enqueue = next_fds = began
    while (now := time.monotonic()) < began + seconds:
        if now >= next_health:
            pending.add(asyncio.create_task(health()))
            next_health += HEALTH_EVERY_S
        if now >= next_enqueue:
            pending.add(asyncio.create_task(enqueue(n)))
            n += 1
            next_enqueue += ENQUEUE_EVERY_S
        if now >= next_fds:
            with contextlib.suppress(OSError):
                result.server_fds_max = max(result.server_fds_max, len(os.listdir(f"/proc/{pid}/fd")))
            next_fds += 0.5
        pending = {t for t in pending if not t.done()}
        await asyncio.sleep(0.005)
    await asyncio.gather(*pending)
    return result


def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def report(name: str, p: Probes) -> None:
    print(
        f"{name:<9} healthz ok {len(p.health_s):>4} failed {p.health_failed:>4}  "
        f"p50 {_pct(p.health_s, 0.5):>6} p99 {_pct(p.health_s, 0.99):>6} max {_pct(p.health_s, 1.0):>7} ms | "
        f"enqueue 202 {len(p.enqueue_s):>4} other/failed {p.enqueue_failed:>4}  "
        f"p99 {_pct(p.enqueue_s, 0.99):>6} ms | server fds max {p.server_fds_max}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between a client's bytes")
    args = parser.parse_args()

    proc, port = start_service()
    try:
        baseline = asyncio.run(probe(port, proc.pid, min(args.seconds, 10.0), "base"))
        ctx = multiprocessing.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        attacker = ctx.Process(target=attack, args=(port, args.connections, args.interval, ready, stop, out))
        attacker.start()
        if not ready.wait(60):
            raise SystemExit("the attacker did not open its connections within 60 s")
        under_attack = asyncio.run(probe(port, proc.pid, args.seconds, "attack"))
        stop.set()
        counts = out.get(timeout=60)
        attacker.join(30)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    print(
        f"slowloris: {args.connections} clients, a byte each every {args.interval:g} s "
        f"(~{args.connections / args.interval:.0f} B/s), "
        f"server RLIMIT_NOFILE {SERVER_NOFILE}:{SERVER_NOFILE}, "
        "REQUEST_DEADLINE and MAX_CONNECTIONS at their defaults"
    )
    report("baseline", baseline)
    report("attack", under_attack)
    print(
        f"attacker over {counts['seconds']} s: {counts['opened']} connections opened, "
        f"{counts['closed_by_server']} closed by the server (deadline or shed), "
        f"{counts['refused']} refused, {counts['bytes']} bytes sent"
    )


if __name__ == "__main__":
    main()

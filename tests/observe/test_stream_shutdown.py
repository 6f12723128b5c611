"""SIGTERM with open event streams: every stream gets its last message, the process exits 0 in time."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx

from service.shutdown import EXIT_BUDGET_S
from tests.observe.process import service_process
from tests.observe.sse import Subscriber
from tests.support.server import wait_until

SHUTDOWN_TIMEOUT_S = 1.0
BIG = "x" * (256 * 1024)


def test_sigterm_with_open_streams_exits_0_within_the_timeout(tmp_path: Path, store_url: str) -> None:
    env = {
        "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT_S),
        "STREAM_HEARTBEAT": "0.2",
        "STREAM_SEND_TIMEOUT": "50",
        "WORK_MIN_MS": "1",
        "WORK_MAX_MS": "3",
        "ERROR_RATE": "0",
    }
    with service_process(env, tmp_path, store_url) as service:
        subs = [Subscriber(f"{service.url}/events/stream").start() for _ in range(5)]
        # One client that never reads, its server-side send blocked when SIGTERM comes
        # (STREAM_SEND_TIMEOUT is far away): it must not hold the exit either.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", int(service.url.rsplit(":", 1)[1])))
        stalled.sendall(b"GET /events/stream HTTP/1.1\r\nHost: kasp\r\n\r\n")
        for sub in subs:
            assert sub.opened.wait(10)
        with httpx.Client(base_url=service.url, timeout=10) as client:
            wait_until(lambda: "kasp_streams 6.0" in client.get("/metrics").text)
            # 15 MiB of messages: several times what the kernel's socket buffers absorb (~3 MiB here).
            for i in range(60):
                assert client.post("/enqueue", json={"id": f"big-{i}", "payload": BIG}).status_code == 202
            wait_until(lambda: client.get("/stats").json()["jobs"]["done"] == 60)
            assert client.post("/enqueue", json={"id": "long", "payload": "sleep=60"}).status_code == 202
            wait_until(lambda: client.get("/jobs/long").json()["state"] == "running")
            assert "kasp_streams 6.0" in client.get("/metrics").text  # none dropped yet

        began = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        rc = service.wait_exit(SHUTDOWN_TIMEOUT_S + 10)
        took = time.monotonic() - began
        stalled.close()

        assert rc == 0, service.log()
        assert took <= SHUTDOWN_TIMEOUT_S + EXIT_BUDGET_S, f"exit {took:.2f} s after SIGTERM"
        for sub in subs:
            assert sub.done.wait(5)
            assert sub.error is None and sub.ended, sub.error
            events = sub.events()
            assert len(events) == 60 * 3 + 3
            assert [m.event for m in events[-3:]] == ["enqueued", "started", "interrupted"]
            assert sub.messages[-1].event == "shutdown"
            assert sub.messages[-1].json()["last_seq"] == events[-1].json()["seq"]
        log = service.log()
        assert "Task was destroyed but it is pending" not in log
        assert "event stream dropped (shutdown)" in log  # the stalled one, cut at the close deadline
        print(
            f"\nSIGTERM with 6 open streams (one stalled): exit 0 after {took:.2f} s "
            f"(SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT_S})"
        )

"""The request deadline and the connection cap (issue 10, item 9), with small numbers.

Memory store only: connection handling happens before any handler touches a store.
The figures against 2,000 slowloris connections are in bench/slowloris.py.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import one_store
from tests.support.server import RunningServer, wait_until

pytestmark = one_store("connection handling happens before any handler touches a store")

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]
DEADLINE_S = 0.5


class _Connection(socket.socket):
    #: time.monotonic() just before connecting: the server's deadline starts later than
    #: this, so seconds measured from it are never shorter than the deadline
    began: float


def _connect(server: RunningServer) -> _Connection:
    began = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = _Connection(fileno=sock.detach())
    conn.settimeout(10)
    conn.began = began
    return conn


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _trickle(sock: _Connection, data: bytes, *, every_s: float, until_s: float) -> float:
    """Send `data` one byte per `every_s` (the stimulus: a client that never stops sending)
    until the server closes or `until_s` passes; the seconds from connecting to the close."""
    began = sock.began
    sock.setblocking(False)
    for byte in data:
        try:
            if sock.recv(65536, socket.MSG_PEEK):
                break  # the server answered
        except BlockingIOError:
            pass
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if time.monotonic() - began > until_s:
            break
        time.sleep(every_s)
    sock.setblocking(True)
    return time.monotonic() - began


@pytest.fixture
def server(make_server: MakeServer) -> Iterator[tuple[RunningServer, httpx.Client]]:
    yield make_server(request_deadline=DEADLINE_S, max_connections=4)


def test_a_head_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline_with_408(
    server: tuple[RunningServer, httpx.Client],
) -> None:
    running, _ = server
    with _connect(running) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 400
        took = _trickle(sock, head, every_s=0.02, until_s=5)  # Sanic alone would wait forever
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"error":"request_timeout"' in answer
    assert DEADLINE_S <= took < DEADLINE_S + 2


def test_a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline_with_408(
    server: tuple[RunningServer, httpx.Client],
) -> None:
    running, client = server
    body = b'{"id":"slow","payload":"' + b"a" * 300 + b'"}'
    head = b"POST /enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    with _connect(running) as sock:
        sock.sendall(head)
        took = _trickle(sock, body, every_s=0.02, until_s=5)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert DEADLINE_S <= took < DEADLINE_S + 2
    assert client.get("/jobs/slow").status_code == 404


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(
    server: tuple[RunningServer, httpx.Client],
) -> None:
    running, _ = server
    with _connect(running) as sock:
        assert _read_all(sock) == b""
        assert DEADLINE_S <= time.monotonic() - sock.began < DEADLINE_S + 2


def test_a_kept_alive_connection_idle_longer_than_the_deadline_is_still_served(
    server: tuple[RunningServer, httpx.Client],
) -> None:
    running, _ = server
    with _connect(running) as sock:
        for _ in range(2):  # the deadline counts per request; idle time between them is not a request
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK")
            time.sleep(DEADLINE_S * 1.5)  # the stimulus: a client idle between its requests


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def errors() -> Iterator[_Errors]:
    """ERROR records of Sanic and kasp: shedding must log nothing (a traceback per shed
    connection cost more than serving it)."""
    handler = _Errors()
    loggers = [logging.getLogger(name) for name in ("sanic.error", "sanic.root", "kasp")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def test_at_the_cap_the_connection_waiting_longest_for_its_head_is_shed_for_a_new_one(
    server: tuple[RunningServer, httpx.Client], errors: _Errors
) -> None:
    running, _ = server
    gate = running.app.ctx.parts.gate
    assert gate.cap == 4
    slow = [_connect(running) for _ in range(4)]
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # a head begun, never finished
        wait_until(lambda: gate.open == 4 and len(gate.waiting) == 4)
        with httpx.Client(base_url=running.url, timeout=5) as fresh:
            assert fresh.get("/healthz").json() == {"status": "ok"}
        shed = _read_all(slow[0])  # the oldest made room: told why, then closed
        assert shed.startswith(b"HTTP/1.1 503 "), shed
        assert b'"error":"too_many_connections"' in shed
        assert gate.evicted == 1
        slow[1].close()  # a client that goes away mid-head
        wait_until(lambda: gate.open == 2)  # slow[2] and slow[3]
        assert errors.messages == []
    finally:
        for sock in slow:
            sock.close()


def test_at_the_cap_with_every_connection_busy_a_new_one_gets_a_cheap_503(
    server: tuple[RunningServer, httpx.Client],
) -> None:
    running, client = server
    client.close()  # its idle keep-alive connection would be shed first
    gate = running.app.ctx.parts.gate
    wait_until(lambda: gate.open == 0)
    streams = [httpx.Client(base_url=running.url, timeout=5) for _ in range(4)]
    opened = [c.stream("GET", "/events/stream") for c in streams]
    try:
        for stream in opened:
            assert stream.__enter__().status_code == 200
        wait_until(lambda: gate.open == 4)  # each answered 200: every head is complete
        with _connect(running) as sock:
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
        assert b"retry-after: 1" in answer and b'"error":"too_many_connections"' in answer
        assert gate.shed == 1
    finally:
        for stream in opened:
            stream.__exit__(None, None, None)
        for c in streams:
            c.close()


def test_a_request_pipelined_behind_a_complete_one_and_never_finished_is_cut_off_at_the_deadline(
    server: tuple[RunningServer, httpx.Client],
) -> None:
    running, _ = server
    with _connect(running) as sock:
        # One packet: a whole request, then the start of a second whose head never ends:
        # no byte arrives after the first is answered, yet the second is under the deadline.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = _read_all(sock)
        took = time.monotonic() - sock.began
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer
    assert b"HTTP/1.1 408 " in answer, answer
    assert DEADLINE_S <= took < DEADLINE_S + 2

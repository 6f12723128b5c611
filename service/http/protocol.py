"""The HTTP/1.1 protocol kasp serves with: Sanic's, plus a whole-request deadline, a
connection cap that sheds the right connections, and the 414/431 answers for a head too large.

Why (issue 10, item 9: slowloris): Sanic's REQUEST_TIMEOUT restarts on every byte
received, so a client that sends one header byte a second holds its connection,
and its file descriptor, forever. With 1,024 descriptors, 1,100 such clients
made /healthz fail. So:

- REQUEST_DEADLINE bounds the whole request, head and body, counted from the
  connection's opening (first request) or the request's first byte (later ones
  on a kept-alive connection), however steadily the bytes trickle in. Past it a
  client that has sent part of a request gets 408 and is closed; one that has
  sent nothing is closed. Enforced by a sweep (service/connections.py), so up to
  one sweep (at most 1 s, SWEEP_S) after the deadline.
- MAX_CONNECTIONS (kept FD_RESERVE under the file-descriptor limit, which
  is raised to its hard limit at start; service/connections.py) bounds the
  connections open at once. At the cap a new connection is admitted by closing
  the connection that has waited longest without a complete request head (a
  trickling head, or an idle keep-alive connection): those are what a
  slowloris holds, while a client that has sent its request is being served
  and keeps its place. If every connection is in a handler (long event streams,
  say), the new one gets a canned 503 and is closed, before anything is read.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sanic.exceptions import PayloadTooLarge, SanicException, URITooLong
from sanic.http import Http, Stage
from sanic.server.protocols.http_protocol import HttpProtocol

from service.connections import ConnectionGate
from service.http.errors import RETRY_AFTER_SHED_S
from service.parts import parts_of

_TIMEOUT_BODY = (
    b'{"error":"request_timeout","message":"the request was not complete within %s s (REQUEST_DEADLINE)"}'
)
_SHED_BODY = (
    b'{"error":"too_many_connections","message":"the service holds MAX_CONNECTIONS connections, '
    b'all busy; retry shortly"}'
)
#: Written straight to the socket, before anything is read: no task, no parsing.
SHED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"retry-after: %d\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%b" % (RETRY_AFTER_SHED_S, len(_SHED_BODY), _SHED_BODY)
)


@cache
def timeout_response(deadline_s: float) -> bytes:
    body = _TIMEOUT_BODY % f"{deadline_s:g}".encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body)
    )


class HeaderFieldsTooLarge(SanicException):
    """The request's header fields exceed the head limit (RFC 6585 §5)."""

    status_code = 431
    quiet = True


#: Sanic's own methods, called by name from the overrides below rather than through super():
#: a super object per request each (~0.1 µs).
_sanic_init_for_request = Http.init_for_request
_sanic_data_received = HttpProtocol.data_received


class KaspHttp(Http):
    """Sanic's HTTP/1.1 cycle, telling the protocol when it waits for a request head, and
    answering 414/431 for a head too large.

    Not an override of `http1_request_header` around Sanic's: that extra coroutine per
    request, with the head's begin/end bookkeeping in it, was ~2% of a POST /enqueue
    (py-spy, docs/PERFORMANCE.md, Item 1). A head begins when bytes arrive while the
    connection waits for one (`KaspProtocol.data_received`); a head is complete once
    Sanic leaves Stage.REQUEST, which is what shedding looks at."""

    __slots__ = ()
    protocol: KaspProtocol

    def init_for_request(self) -> None:
        _sanic_init_for_request(self)  # type: ignore[no-untyped-call]  # Sanic leaves it untyped
        self.protocol.await_head()

    async def error_response(self, exception: Exception) -> None:
        if self.stage is Stage.REQUEST and type(exception) is PayloadTooLarge:
            # Sanic says 413 for a head over REQUEST_MAX_HEADER_SIZE (its only 413 while it reads
            # a head); clients expect 414 for a request line that alone fills it, 431 for header
            # fields (RFC 9110 §15.5.15, RFC 6585).
            self.keep_alive = False
            limit = self.HEADER_MAX_SIZE
            if self.recv_buffer.find(b"\r\n", 0, limit) == -1:
                exception = URITooLong(f"the request line is longer than the {limit}-byte head limit")
            else:
                exception = HeaderFieldsTooLarge(
                    f"the request line and header fields exceed the {limit}-byte head limit"
                )
        await super().error_response(exception)


class KaspProtocol(HttpProtocol):
    """HttpProtocol with kasp's request deadline and connection cap (module docstring)."""

    HTTP_CLASS = KaspHttp
    __slots__ = ("_admitted", "_awaiting", "_begun", "_gate", "_heads", "_timeout_response")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate: ConnectionGate = parts_of(self.app).gate
        self._timeout_response = timeout_response(self._gate.deadline_s)
        self._admitted = False
        self._heads = 0  # request heads begun on this connection
        self._awaiting = False  # waiting for a request head, none of it received yet
        self._begun = self._gate.begun  # the gate's deadline book (service/connections.py)

    # -- asyncio.Protocol callbacks ----------------------------------------

    def connection_made(self, transport: Any) -> None:
        if not self._gate.admit():
            transport.write(SHED_RESPONSE)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)  # type: ignore[no-untyped-call]
        self._gate.watch(self.loop)
        self._arm()  # the first request's deadline counts from the connection's opening

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            if self._awaiting:
                self.head_begins()
            _sanic_data_received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._disarm()
        self._gate.open -= 1
        self._gate.waiting.pop(self, None)
        super().connection_lost(exc)  # type: ignore[no-untyped-call]

    # -- what KaspHttp reports ---------------------------------------------

    def await_head(self) -> None:
        """Idle between requests (or before the first): first in line to be shed at the cap."""
        if self._heads:
            self._disarm()  # a kept-alive connection waits under KEEP_ALIVE_TIMEOUT, not the deadline
        waiting = self._gate.waiting
        waiting.pop(self, None)
        waiting[self] = None
        if self.recv_buffer:  # already here (pipelined, or sent before the task looked)
            self.head_begins()
        else:
            self._awaiting = True

    def head_begins(self) -> None:
        self._awaiting = False
        self._heads += 1
        if self._heads > 1:
            self._arm()  # a later request's deadline counts from its first byte

    def shed(self) -> bool:
        """Make room at the cap: a mid-head connection is told why (503), an idle one just
        closed; False (and nothing done) for one whose request head is complete."""
        http = self._http if hasattr(self, "_http") else None
        if http is None or self._task is None:
            self.close()
        elif http.stage is Stage.REQUEST:
            self._end(SHED_RESPONSE)
        elif http.stage is Stage.IDLE:
            self._task.cancel()  # idle: its task ends quietly and closes the connection
        else:
            return False  # being served: it keeps its place
        return True

    def _end(self, answer: bytes) -> None:
        """Write a canned answer and end the connection through its task.

        Not Sanic's error path: a burst of slowloris connections all reaching their
        deadline (or all shed) at once would render hundreds of error responses in one
        loop iteration, stalling every other client (bench/slowloris.py: p99 ~80 ms that
        way). Not transport.close() under the task either: Sanic 25.12 then logs a
        traceback per connection (its "transport is closed" branch reads `request.method`
        of a request not yet parsed). Stage FAILED is Sanic's own "nothing more may be sent
        on this connection": the cancelled task's error path stays silent, and it closes."""
        http = self._http
        http.keep_alive = False
        http.request_body = None  # do not wait for the rest of a body
        http.stage = Stage.FAILED
        assert self.transport is not None and self._task is not None
        self.transport.write(answer)
        self._task.cancel()

    # -- the deadline (swept by the gate: at most one sweep late) -----------

    def _arm(self) -> None:
        begun = self._begun
        begun.pop(self, None)  # re-inserted: the book stays in order of beginning
        begun[self] = self.loop.time()

    def _disarm(self) -> None:
        self._begun.pop(self, None)

    def deadline_passed(self) -> None:
        http = self._http if hasattr(self, "_http") else None
        if http is None or self._task is None or self.transport is None or self.transport.is_closing():
            return
        stage = http.stage
        if stage is Stage.IDLE and not self._heads:  # opened, and nothing sent within the deadline
            self._gate.timed_out += 1
            self._task.cancel()
        elif stage is Stage.REQUEST or (stage is Stage.HANDLER and http.request_body):
            self._gate.timed_out += 1
            self._end(self._timeout_response)

"""GET /events/stream: the event log as Server-Sent Events, live and resumable.

One message per event (`id: <seq>`, `event: <type>`, `data: <event JSON>`).
Each stream pages through the store from its own cursor (at the head, through
the events the feed's listener holds: service/recent_events.py) and sleeps on
the feed's wake-up (service/feed.py), so it never slows an append or another
stream. Besides events it sends: a `: keepalive` comment after
STREAM_HEARTBEAT seconds of silence; `event: gap` when events it would have
sent are no longer retained; and a last message before it ends:
`event: shutdown` when the service stops, `event: dropped` when the
subscriber has not accepted data for STREAM_SEND_TIMEOUT seconds, `event: end`
when the stream is STREAM_MAX_AGE seconds old (if set).
See docs/OBSERVABILITY.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, cast

from sanic import Blueprint, Request
from sanic.exceptions import RequestCancelled
from sanic.response import HTTPResponse
from sanic.server.protocols.base_protocol import SanicProtocol

from domain.events import Event
from service.feed import EventFeed, Subscription
from service.http.errors import InvalidRequest
from service.http.events import MAX_SEQ
from service.http.query import int_param
from service.parts import parts_of
from service.store.base import EventStore
from service.store.faults import StoreUnavailable

log = logging.getLogger("kasp.stream")

bp = Blueprint("stream")

# Under a steady flow of events a stream sends at most once per slot of this length on the
# loop's clock, so one send carries many events: with 50 subscribers, bench/stream_fanout.py
# measured the server's CPU for 1000 jobs at 6.7 s with no batching, 3.6 s at 10 ms, 1.5 s at
# 25 ms, 1.1 s at 50 ms. Quiet streams send at once; a busy one delivers each event at most this
# much later. The slots are the same for every stream, so streams at the same cursor read in the
# same moment and share the read (service/stream_pages.py).
BATCH_S = 0.025
# `?batch_ms=` asks for coarser batching, never finer: a dashboard needs a few updates a second,
# not 40 (bench/dashboards.py). The cap is a guess: beyond 10 s a stream no longer reads as live;
# a client that wants less often should page GET /events.
BATCH_MS_MIN = int(BATCH_S * 1000)
BATCH_MS_MAX = 10_000
RETRY_MS = 1000  # reconnect delay advertised to EventSource clients (a guess)
DROP_FLUSH_S = 1.0  # how long a dropped stream's last message may wait to leave before the socket is aborted
# At shutdown the stream already had its flush time (service/shutdown.py STREAM_FLUSH_S): a
# subscriber that took nothing in it is aborted at once, so it never holds the exit.
SHUTDOWN_DROP_FLUSH_S = 0.05
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of a live stream
_SEQ_TEXT = re.compile(r"[0-9]{1,18}")
#: The `event:` names of messages that are no event of the log (see the module docstring).
CONTROL_MESSAGES = ("gap", "shutdown", "dropped", "end")


@bp.get("/events/stream")
async def event_stream(request: Request) -> None:
    after = resume_point(request)
    batch_ms = int_param(request, "batch_ms", default=BATCH_MS_MIN, lo=BATCH_MS_MIN, hi=BATCH_MS_MAX)
    ctx = parts_of(request)
    stream = _Stream(
        request,
        ctx.store,
        ctx.feed,
        heartbeat_s=ctx.config.stream_heartbeat,
        send_timeout_s=ctx.config.stream_send_timeout,
        batch_s=batch_ms / 1000,
        max_age_s=ctx.config.stream_max_age,
    )
    await stream.run(after)


def resume_point(request: Request) -> int:
    """`Last-Event-ID` (what an EventSource sends when it reconnects) wins over `?after=`."""
    after = int_param(request, "after", default=0, lo=0, hi=MAX_SEQ)
    header = request.headers.get("last-event-id")
    if header is None or not header.strip():
        return after
    raw = header.strip()
    if not _SEQ_TEXT.fullmatch(raw) or int(raw) > MAX_SEQ:
        raise InvalidRequest(
            f"Last-Event-ID must be an event seq 0..{MAX_SEQ}, got {raw!r}",
            field="Last-Event-ID",
            code="invalid_parameter",
        )
    return int(raw)


def control_message(kind: str, **data: Any) -> bytes:
    """A message that is not an event: no `id:`, so it never moves a client's resume point."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Stream:
    def __init__(
        self,
        request: Request,
        store: EventStore,
        feed: EventFeed,
        *,
        heartbeat_s: float,
        send_timeout_s: float,
        batch_s: float,
        max_age_s: float,
    ) -> None:
        self._request = request
        self._store = store
        self._feed = feed
        self._heartbeat_s = heartbeat_s
        self._send_timeout_s = send_timeout_s
        self._batch_s = batch_s
        self._loop = asyncio.get_running_loop()
        self._response: HTTPResponse | None = None
        self._last_send = self._loop.time()
        self._ends_at = self._loop.time() + max_age_s if max_age_s else float("inf")

    async def run(self, after: int) -> None:
        feed = self._feed
        sub = feed.subscribe(after)
        try:
            self._response = await self._request.respond(content_type="text/event-stream", headers=HEADERS)
            opening = f"retry: {RETRY_MS}\n: kasp event stream, events after seq {after}\n\n".encode()
            if not await self._send(sub, opening):
                return
            while True:
                if feed.closing and self._loop.time() >= feed.close_deadline:
                    break  # out of flush time: end with what was sent
                if self._loop.time() >= self._ends_at:
                    ending = control_message(
                        "end",
                        message="this stream reached STREAM_MAX_AGE; reconnect to resume",
                        last_seq=sub.cursor,
                    )
                    await self._send(sub, ending, end_stream=True)
                    return
                wake = feed.wake_future()  # before the read: see feed.wake_future
                committed = feed.last_seq  # what this instance had committed when `wake` was taken
                caught_up_at_close = feed.closing
                page = await feed.pages.read(self._store, sub.cursor)
                if page.events:
                    gap = await self._gap(sub.cursor, page.events)
                    if gap is not None and not await self._send(sub, gap):
                        return
                    for chunk, last_seq in feed.pages.sends(page):
                        if not await self._send(sub, chunk):
                            return
                        sub.cursor = last_seq
                    if page.full or sub.cursor < committed:
                        # More to read now, but after the other streams at this cursor have sent
                        # this page: a send that does not block never yields, and one stream
                        # running ahead alone through a backlog reads and formats it again for
                        # each of them. With 10 dashboards behind a saturated engine that was
                        # ~4 formats per event (bench/dashboards.py, docs/PERFORMANCE.md).
                        await asyncio.sleep(0)
                        continue
                    # Caught up with every commit before `wake`: a later one resolves it, and
                    # another instance's events come with the poll, as after an empty read.
                if caught_up_at_close:
                    break
                if not await self._idle(sub, wake):
                    return
            message = control_message(
                "shutdown", message="the service is shutting down; reconnect to resume", last_seq=sub.cursor
            )
            await self._send(sub, message, end_stream=True)
        except RequestCancelled:
            pass  # the client went away
        except StoreUnavailable:
            pass  # the stream ends; EventSource reconnects after RETRY_MS from its Last-Event-ID
        finally:
            feed.unsubscribe(sub)

    async def _idle(self, sub: Subscription, wake: asyncio.Future[None]) -> bool:
        """Sleep until a commit, the store's poll interval, or the heartbeat is due.
        False when the heartbeat found the subscriber stalled and dropped it."""
        heartbeat_at = self._last_send + self._heartbeat_s
        timeout = min(heartbeat_at, self._ends_at) - self._loop.time()
        poll = self._feed.poll_interval_s
        if poll is not None:
            timeout = min(timeout, poll)
        if timeout > 0:
            await asyncio.wait((wake,), timeout=timeout)
        if not wake.done():
            if self._loop.time() >= heartbeat_at:
                return await self._send(sub, b": keepalive\n\n")
            return True
        batch, now = self._batch_s, self._loop.time()
        slot = now // batch
        if slot == self._last_send // batch and not self._feed.closing:
            # Sent in this slot already: let more events join a send at the next one.
            await self._feed.pause((slot + 1) * batch - now)
        return True

    async def _gap(self, cursor: int, events: list[Event]) -> bytes | None:
        """A `gap` message when retention removed events this page would have held."""
        missing = events[-1].seq - cursor - len(events)
        if missing == 0:
            return None
        stats = await self._store.stats()
        if stats.last_seq == stats.event_count:  # nothing evicted: a store whose seqs have holes
            return None
        return control_message(
            "gap",
            after=cursor,
            until=events[-1].seq,
            missing=missing,
            message=(
                f"{missing} events between seq {cursor} and {events[-1].seq} are no longer retained "
                "(finished jobs beyond RETAIN_FINISHED are evicted with their events)"
            ),
        )

    async def _send(self, sub: Subscription, data: bytes, *, end_stream: bool = False) -> bool:
        """Send, or drop the stream if the subscriber does not take the data in time."""
        assert self._response is not None
        sub.sending_since = time.monotonic()
        try:
            async with asyncio.timeout_at(self._feed.send_deadline(self._send_timeout_s)) as deadline:
                sub.send_deadline = deadline
                await self._response.send(data, end_stream)
        except TimeoutError:
            self._abandon(sub)
            return False
        finally:
            sub.send_deadline = sub.sending_since = None
        self._last_send = self._loop.time()
        transport = self._transport()
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        sub.buffered_bytes = buffered
        sub.peak_buffered_bytes = max(sub.peak_buffered_bytes, buffered)
        return True

    def _abandon(self, sub: Subscription) -> None:
        """The subscriber is not reading: write a last message past the full buffer, close.

        Sanic's send waits until the transport's buffer drains, which a stalled
        client never lets happen; so the last chunk (and the chunked-encoding
        terminator) go straight to the transport, which flushes them if the
        client reads within DROP_FLUSH_S and is aborted otherwise.
        """
        reason = "shutdown" if self._feed.closing else "slow_consumer"
        if reason == "shutdown":
            message = control_message(
                "shutdown", message="the service is shutting down; reconnect to resume", last_seq=sub.cursor
            )
        else:
            message = control_message(
                "dropped",
                reason=reason,
                message=(
                    f"the subscriber accepted no data for {self._send_timeout_s:g} s "
                    "(STREAM_SEND_TIMEOUT); reconnect with Last-Event-ID to resume"
                ),
                last_seq=sub.cursor,
            )
        self._feed.dropped[reason] += 1
        log.warning(
            "event stream dropped (%s) at seq %d", reason, sub.cursor, extra={"action": "stream_dropped"}
        )
        transport = self._transport()
        if transport is None or transport.is_closing():
            return
        transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(message), message))
        # Sanic's protocol closes gracefully and aborts if the buffer is still full after the timeout.
        flush_s = SHUTDOWN_DROP_FLUSH_S if reason == "shutdown" else DROP_FLUSH_S
        cast(SanicProtocol, transport.get_protocol()).close(timeout=flush_s)

    def _transport(self) -> asyncio.Transport | None:
        # Sanic types it as its own TransportProtocol; it is the asyncio (or uvloop) transport.
        return cast(asyncio.Transport | None, self._request.transport)

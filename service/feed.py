"""The live side of the event log: wakes stream subscribers, ends them at shutdown.

Subscribers never receive events pushed into a queue of their own: each one
pages through `store.read_events(after=its cursor)` and sleeps on a wake-up
that the store listener fires after commits. So an append costs the same with
0 or 500 subscribers (one flag and at most one scheduled callback per loop
iteration), a slow subscriber holds nothing but its cursor, and a store whose
other instances' events are only visible by reading (`poll_interval_s`) works
too: subscribers re-read on that interval. While a stream is open the listener
also keeps the last committed events (one shared ring, service/recent_events.py),
from which a read at the head is answered without the store. See docs/OBSERVABILITY.md.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

import orjson

from domain.events import Event, format_ts
from domain.states import EventType, JobState
from service.recent_events import RecentEvents
from service.stream_pages import PageCache

FORMAT_CACHE_BYTES = 4 * 1024 * 1024  # a guess: a few pages of recent messages, shared by all subscribers
CLOSE_GRACE_S = 0.2  # a guess: one store read or one scheduled step of a stream, on a busy machine


@dataclass(eq=False, slots=True)
class Subscription:
    """One open stream, as the feed sees it: for shutdown, metrics and tests."""

    cursor: int
    #: the deadline of the send in progress, if any; shutdown moves it to now
    send_deadline: asyncio.Timeout | None = None
    #: time.monotonic() when the send in progress began, if one is
    sending_since: float | None = None
    #: bytes left in this subscriber's transport buffer after its last send
    buffered_bytes: int = 0
    peak_buffered_bytes: int = 0


class EventFeed:
    """Per-app wake-up source and registry of open event streams."""

    def __init__(self, *, poll_interval_s: float | None) -> None:
        self.poll_interval_s = poll_interval_s
        self.closing = False
        self.close_deadline = float("inf")  #: loop time by which every stream must have ended
        self.subscriptions: set[Subscription] = set()
        self.dropped: Counter[str] = Counter()  #: streams dropped, by reason
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._wake: asyncio.Future[None] | None = None
        self._fire_scheduled = False
        self._formatted: OrderedDict[int, bytes] = OrderedDict()
        self._formatted_bytes = 0
        self._closed: asyncio.Future[None] = self._loop.create_future()  #: resolved by close()
        self.last_seq = 0  #: the last seq this instance committed (its listener's last event)
        #: the last events committed here, while a stream is open (service/recent_events.py)
        self.recent = RecentEvents()
        self.pages = PageCache(self.format, self.recent)  #: reads shared by streams at the same cursor
        self._all_ended: asyncio.Future[None] | None = None  #: resolved when closing leaves no stream

    # -- the store listener: on the append path, so O(1) and allocation-free mostly

    def on_event(self, event: Event) -> None:
        self.last_seq = event.seq
        if self.subscriptions:  # with no stream open nobody reads the head: keep nothing
            if threading.get_ident() == self._thread_id:
                self.recent.append(event)
            else:  # a store that calls listeners from its own thread: the ring is the loop's
                self._loop.call_soon_threadsafe(self.recent.append, event)
        if self._fire_scheduled or self._wake is None:
            return  # a wake-up is on its way, or no stream is waiting for one
        self._fire_scheduled = True
        if threading.get_ident() == self._thread_id:
            self._loop.call_soon(self._fire)
        else:  # a store that calls listeners from its own thread
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        # One wake-up per loop iteration however many events were committed in it.
        self._fire_scheduled = False
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- subscribers -------------------------------------------------------

    def wake_future(self) -> asyncio.Future[None]:
        """A future resolved after the next commit. Take it BEFORE reading, so a commit
        that lands between the read and the wait still wakes the reader."""
        if self._wake is None:
            self._wake = self._loop.create_future()
        return self._wake

    def subscribe(self, cursor: int) -> Subscription:
        subscription = Subscription(cursor)
        self.subscriptions.add(subscription)
        return subscription

    async def pause(self, delay_s: float) -> None:
        """Sleep `delay_s`, or less if the feed closes meanwhile: a stream that waits for more
        events to join its send (`?batch_ms=`) must not hold up the shutdown."""
        await asyncio.wait((self._closed,), timeout=delay_s)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        if not self.subscriptions:
            self.recent.clear()  # what it holds would only be read by a stream at the head
        ended = self._all_ended
        if not self.subscriptions and ended is not None and not ended.done():
            ended.set_result(None)

    def format(self, event: Event) -> bytes:
        """The SSE message of one event, built once however many subscribers send it."""
        message = self._formatted.get(event.seq)
        if message is None:
            message = sse_message(event)
            if len(message) <= FORMAT_CACHE_BYTES:
                cache = self._formatted
                self._formatted_bytes += len(message)
                # Drop the oldest first. An OrderedDict, because `next(iter(dict))` walks over
                # the holes earlier pops left at a dict's front: with 10 dashboards behind a
                # saturated engine (bench/dashboards.py) that walk was 38% of the server's CPU.
                while self._formatted_bytes > FORMAT_CACHE_BYTES:
                    self._formatted_bytes -= len(cache.popitem(last=False)[1])
                cache[event.seq] = message
        return message

    # -- shutdown ----------------------------------------------------------

    async def close(self, *, flush_until: float) -> None:
        """Tell every stream to send what it has not yet sent and end by `flush_until` (loop
        time), and wait until they have: a stream still open when Sanic closes the server
        would hold the exit for GRACEFUL_SHUTDOWN_TIMEOUT (notes §5).

        Called once the pool has stopped, so the drain's own events (outcomes,
        `interrupted`) still reach subscribers that keep up. A subscriber that does not
        take its data by then is dropped (service/http/stream.py `_abandon`)."""
        self.closing = True
        self.close_deadline = flush_until
        self._fire()
        if not self._closed.done():
            self._closed.set_result(None)
        for subscription in self.subscriptions:
            deadline = subscription.send_deadline
            if deadline is not None and (deadline.when() or 0) > flush_until:
                deadline.reschedule(flush_until)
        if not self.subscriptions:
            return
        self._all_ended = self._loop.create_future()
        # A stream notices the deadline at its next step (a send times out at it; a read
        # returns): CLOSE_GRACE_S covers that last step.
        timeout = max(0.0, flush_until - self._loop.time()) + CLOSE_GRACE_S
        await asyncio.wait((self._all_ended,), timeout=timeout)

    def send_deadline(self, timeout_s: float) -> float:
        """Loop time by which a send started now must be done."""
        return min(self._loop.time() + timeout_s, self.close_deadline)


def sse_message(event: Event) -> bytes:
    """`id:`, `event:` and `data:` (the event's JSON, compact, UTF-8) of one event's message.

    The bytes are those of `_message_from_dict`: `Event.to_dict` as orjson writes it. Built
    from pieces instead, orjson only for the parts that may need escapes (the job id, the
    data), the fixed parts (type, states, small ints) made once per value and a time's text
    once per millisecond: ~8,000 instructions against ~14,500 a message (callgrind), once per
    event for every stream (docs/PERFORMANCE.md, Dashboards).
    tests/service/test_sse_message.py holds it to `_message_from_dict` and to `json.dumps`.
    What orjson refuses goes the way of `_message_from_dict`."""
    try:
        data = event.data
        from_state = event.from_state
        attempt = event.attempt
        seq = b"%d" % event.seq
        head, tail = _TYPE_PARTS[event.type._value_]
        return b"".join(
            (
                b"id: ",
                seq,
                head,
                seq,
                tail,
                orjson.dumps(event.job_id),
                b',"at":"',
                _at_text(event.at_ms),
                b'","from":',
                b"null" if from_state is None else _STATE_JSON[from_state._value_],
                b',"to":',
                _STATE_JSON[event.to_state._value_],
                b',"attempt":',
                b"null" if attempt is None else _SMALL_INTS[attempt] if attempt < 100 else b"%d" % attempt,
                b',"data":',
                orjson.dumps(data) if data else b"{}",
                b"}\n\n",
            )
        )
    except orjson.JSONEncodeError:
        return _message_from_dict(event)


#: by type: what comes between the `id:` seq and the JSON's seq, and after that up to the job id
_TYPE_PARTS = {
    t._value_: (b'\nevent: %b\ndata: {"seq":' % name, b',"type":"%b","job_id":' % name)
    for t in EventType
    for name in (t._value_.encode(),)
}
_STATE_JSON = {s._value_: orjson.dumps(s._value_) for s in JobState}
_SMALL_INTS = tuple(b"%d" % n for n in range(100))
_AT_CACHE: dict[int, bytes] = {}
AT_CACHE_SIZE = 4096  # milliseconds of text (~150 KB); the events of a busy millisecond share one


def _at_text(at_ms: int) -> bytes:
    text = _AT_CACHE.get(at_ms)
    if text is None:
        if len(_AT_CACHE) >= AT_CACHE_SIZE:
            _AT_CACHE.clear()
        text = _AT_CACHE[at_ms] = format_ts(at_ms).encode()
    return text


def _message_from_dict(event: Event) -> bytes:
    """The message from `Event.to_dict`: the definition `sse_message` is held to.

    orjson: the stdlib's `json.dumps` was ~9 µs of the ~15 µs an event's message cost, orjson
    under 1 µs (docs/PERFORMANCE.md, Dashboards). The same compact JSON, key order kept; only a
    float may be spelt otherwise (`1e16` for `1e+16`), as in GET /events' answers already."""
    body = event.to_dict()
    try:
        data = orjson.dumps(body)
    except orjson.JSONEncodeError:
        # What orjson refuses, the stdlib writes: an integer beyond 64 bits in a result, or a lone
        # surrogate (refused at input, escaped in error texts), which `backslashreplace` can only
        # turn into its JSON escape, never into an exception that stops every reader.
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        data = text.encode("utf-8", "backslashreplace")
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (event.seq, event.type.value.encode(), data)

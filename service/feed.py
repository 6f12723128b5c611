"""The live side of the event log: wakes stream subscribers, ends them at shutdown.

Subscribers never receive events pushed into a queue of their own: each one
pages through `store.read_events(after=its cursor)` and sleeps on a wake-up
that the store listener fires after commits. So an append costs the same with
0 or 500 subscribers (one flag and at most one scheduled callback per loop
iteration), a slow subscriber holds nothing but its cursor, and a store whose
other instances' events are only visible by reading (`poll_interval_s`) works
too: subscribers re-read on that interval. See docs/OBSERVABILITY.md.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass

from domain.events import Event
from service.stream_pages import PageCache

FORMAT_CACHE_BYTES = 4 * 1024 * 1024  # a guess: a few pages of recent messages, shared by all subscribers
CLOSE_FLUSH_S = 1.0  # a guess: at shutdown, time a stream gets to send what it has not yet sent


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
        self._formatted: dict[int, bytes] = {}
        self._formatted_bytes = 0
        self._closed: asyncio.Future[None] = self._loop.create_future()  #: resolved by close()
        self.last_seq = 0  #: the last seq this instance committed (its listener's last event)
        self.pages = PageCache(self.format)  #: store reads shared by streams at the same cursor

    # -- the store listener: on the append path, so O(1) and allocation-free mostly

    def on_event(self, event: Event) -> None:
        self.last_seq = event.seq
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

    def format(self, event: Event) -> bytes:
        """The SSE message of one event, built once however many subscribers send it."""
        message = self._formatted.get(event.seq)
        if message is None:
            data = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
            message = f"id: {event.seq}\nevent: {event.type.value}\ndata: {data}\n\n".encode()
            if len(message) <= FORMAT_CACHE_BYTES:
                cache = self._formatted
                self._formatted_bytes += len(message)
                # drop the oldest first: dicts keep insertion order
                while self._formatted_bytes > FORMAT_CACHE_BYTES:
                    self._formatted_bytes -= len(cache.pop(next(iter(cache))))
                cache[event.seq] = message
        return message

    # -- shutdown ----------------------------------------------------------

    def close(self) -> None:
        """Tell every stream to send what it has not yet sent and end, within CLOSE_FLUSH_S.

        Called once the pool has stopped, so the drain's own events (outcomes,
        `interrupted`) still reach subscribers that keep up."""
        self.closing = True
        self.close_deadline = self._loop.time() + CLOSE_FLUSH_S
        self._fire()
        if not self._closed.done():
            self._closed.set_result(None)
        for subscription in self.subscriptions:
            deadline = subscription.send_deadline
            if deadline is not None and (deadline.when() or 0) > self.close_deadline:
                deadline.reschedule(self.close_deadline)

    def send_deadline(self, timeout_s: float) -> float:
        """Loop time by which a send started now must be done."""
        return min(self._loop.time() + timeout_s, self.close_deadline)

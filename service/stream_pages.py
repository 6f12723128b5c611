"""Pages of the event log shared by the streams that read from the same cursor.

Every /events/stream subscriber pages through the store from its own cursor
(service/feed.py says why), and streams that keep up sit at the same cursor:
the head of the log. Streams with the same `?batch_ms=` send in the same slots
of the loop's clock (service/http/stream.py), so they ask for the same page at
the same moment. Here the first of them reads it from the store and builds its
sends; the others get that page and those bytes. So N dashboards at the head
cost one store read and one join per batch, plus N socket writes, instead of N
of each: bench/dashboards.py measured what that leaves.

A page is what `store.read_events(after=cursor)` returned at the moment it was
read. It stays a correct answer for that cursor afterwards: seqs only grow, and
a reader that pages with after= never misses an event, so a later read can
only return more events, never different ones. A stream that gets a page
shorter than what the store now holds reads again from the page's end. A cursor
the feed's recent events cover gets its page from them instead of the store
(service/recent_events.py says when that is the store's answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from domain.events import Event
from service.recent_events import RecentEvents
from service.store.base import EventStore

PAGE_EVENTS = 200  # events per store read (~50 KB of messages with small payloads)
# Events per page from the feed's recent events (service/recent_events.py), which bounds what
# they keep alive itself: 4 times fewer pages and sends for a stream going through a backlog.
# py-spy, 10 overviews behind a saturated engine (bench/dashboards.py): the sends went from
# 6-8.6% of the server's samples to 3-3.7%, the streams from ~21% to ~16.5%.
RECENT_PAGE_EVENTS = 800
# A send carries at most this, or one message if that alone is larger. Sanic's send waits
# for its transport's buffer to drain below 64 KiB, so a subscriber that does not read holds
# one such send in the buffer and one in flight; 256 KiB for the same reason as above
# (~800 small messages: one send a page). It was 64 KiB, Sanic's write-buffer mark.
CHUNK_BYTES = 256 * 1024
# Pages kept for streams that come to the same cursor: the last few batches' worth (it was 16
# pages of 200 events). A guess; streams that fall further behind read for themselves.
CACHED_PAGES = 8
# The sends a page keeps for the streams after the first: a page from the recent events (~800
# events of ~200-270 B in bench/dashboards.py) and room to spare. A page whose sends do not fit
# leaves the cache: so it holds at most 4 MiB of sends (as much as the feed's message cache)
# and the events behind them, and a page of large payloads is never kept.
PAGE_KEPT_BYTES = 2 * CHUNK_BYTES


class Page:
    """One store read: its events, and the first sends built from them (up to PAGE_KEPT_BYTES)."""

    __slots__ = ("after", "events", "kept_bytes", "limit", "sends")

    def __init__(self, after: int, events: list[Event], limit: int = PAGE_EVENTS) -> None:
        self.after = after
        self.events = events
        self.limit = limit  #: what the read asked for at most
        #: (first event index, end index, bytes, last seq carried), contiguous from index 0
        self.sends: list[tuple[int, int, bytes, int]] = []
        self.kept_bytes = 0

    @property
    def full(self) -> bool:
        """True when the read may have stopped at its limit rather than at the end of the log."""
        return len(self.events) >= self.limit


class PageCache:
    """The pages recent reads returned, by cursor; a read in progress is shared too."""

    def __init__(self, message: Callable[[Event], bytes], recent: RecentEvents) -> None:
        self._message = message
        self._recent = recent
        #: pages built from the feed's recent events, and pages read from the store
        self.recent_reads = self.store_reads = 0
        #: by cursor, oldest first; a future not done yet is a read in progress
        self._pages: dict[int, asyncio.Future[Page]] = {}

    async def read(self, store: EventStore, after: int) -> Page:
        """The page of events after `after`: a cached one, the one another stream is reading,
        or one read here. A cached page costs no wait at all, so a stream that reads from the
        cache moves exactly as one that reads the memory store."""
        while (shared := self._pages.get(after)) is not None:
            if shared.done():
                return shared.result()  # only pages with events stay cached
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                # the stream that was reading went away, or its read failed: read here
        shared = asyncio.get_running_loop().create_future()
        self._pages[after] = shared
        while len(self._pages) > CACHED_PAGES:
            del self._pages[next(iter(self._pages))]
        recent = self._recent.after(after, RECENT_PAGE_EVENTS)
        if recent is not None:  # the head: the events the listener was handed (service/recent_events.py)
            self.recent_reads += 1
            page = Page(after, recent, RECENT_PAGE_EVENTS)
            shared.set_result(page)
            return page
        self.store_reads += 1
        try:
            events = await store.read_events(after=after, limit=PAGE_EVENTS, job_id=None, type=None)
            page = Page(after, events)
        except BaseException:
            self._drop(after, shared)
            shared.cancel()  # the waiting streams read for themselves (and meet the error themselves)
            raise
        if not page.events:
            self._drop(after, shared)  # no answer for later readers: events may come
        shared.set_result(page)
        return page

    def _drop(self, after: int, shared: asyncio.Future[Page]) -> None:
        if self._pages.get(after) is shared:
            del self._pages[after]

    def sends(self, page: Page) -> Iterator[tuple[bytes, int]]:
        """The page's messages in sends of about CHUNK_BYTES, each with the last seq it carries:
        the ones another stream built already, then built here (and kept up to
        PAGE_KEPT_BYTES). What one stream holds beyond its socket buffer stays bounded
        whatever the payloads: its page, one send, and what the cache keeps for everyone."""
        events = page.events
        index, at = 0, 0
        while at < len(events):
            kept = page.sends
            if index < len(kept) and kept[index][0] == at:
                _, at, chunk, last_seq = kept[index]
                index += 1
            else:
                start = at
                chunk, last_seq, at = self._build(events, start)
                contiguous = len(kept) == index and start == (kept[-1][1] if kept else 0)
                if contiguous and self._keep(page, len(chunk)):
                    kept.append((start, at, chunk, last_seq))
                    index += 1
                elif contiguous:
                    # Too large to keep: later readers read the store themselves, and the
                    # cache never holds the events (with their payloads) of a large page.
                    shared = self._pages.get(page.after)
                    if shared is not None and shared.done() and shared.result() is page:
                        del self._pages[page.after]
            yield chunk, last_seq

    def _build(self, events: list[Event], start: int) -> tuple[bytes, int, int]:
        parts: list[bytes] = []
        size = 0
        end = start
        while end < len(events) and size < CHUNK_BYTES:
            message = self._message(events[end])
            parts.append(message)
            size += len(message)
            end += 1
        return b"".join(parts), events[end - 1].seq, end

    def _keep(self, page: Page, size: int) -> bool:
        if page.kept_bytes + size > PAGE_KEPT_BYTES:
            return False  # this stream's send only
        page.kept_bytes += size
        return True

"""The events this instance committed last, kept so streams at the head need no store read.

Streams that keep up read the head of the log: events the feed's store listener
was handed a moment before, in commit order, with their seqs. Reading them back
from the store costs a query (or, in the memory store, an `Event` rebuilt per
stored tuple) per page: ~13% of the server's CPU behind a saturated engine with
10 dashboards (bench/dashboards.py, docs/PERFORMANCE.md). So the feed keeps the
most recent committed `Event` objects here (references, nothing copied), and a
read answers from them when they provably are what the store would return.

The ring only ever holds a contiguous run of seqs (first, first + 1, ..., last):
an event whose seq does not follow the last one (another PostgreSQL instance
committed the seqs between, or a store numbers with holes) starts a new run. So
a cursor inside the run has every event after it here, up to `last`, and none
is missing; any other cursor (older than the run, at or past its end) gets None
and the caller reads the store, which also finds other instances' events and
says when retention evicted some (`event: gap`). An event evicted from the store
after it was committed may still be served from here: a stream that read at
that moment would have had it too.

Bounded by an estimate of the bytes its events keep alive (which bounds their
count too), so a run of large payloads never pins more than RING_BYTES: the store evicts finished
jobs (RETAIN_FINISHED), and the ring must not keep them in its stead.
"""

from __future__ import annotations

from domain.events import Event
from domain.results import MAX_RESULT_BYTES

# The bound on what the ring's events keep alive, by `weight`. Every event weighs at least
# EVENT_BYTES, so this bounds the count too: at most 32,768 events, or 64 payloads of 256 KiB.
# What a stream at the head reads between two of its sends, with `?batch_ms=1000` (the
# dashboard's) behind a saturated engine, is a second of the log, ~45,000 events
# (bench/dashboards.py): the ring serves the newest part of such a backlog from here.
RING_BYTES = 16 * 1024 * 1024
# An `Event` (slots, 9 fields: ~120 B) and its data dict (~230-360 B): a small event's weight.
EVENT_BYTES = 512
TRIM_PARTS = 16  # past the bound, 1/16 of it is dropped at once (~2,000 small events)


def weight(event: Event) -> int:
    """An estimate of the bytes an event keeps alive: its object, its dict, its strings.

    Only the values that can be large are looked at (domain/job.py: `enqueued`'s payload,
    `succeeded`'s result, an error text); every other value is a short str or an int. A
    result that is a JSON object or array counts as the largest a result may be: measuring it
    would cost an encode on the append path. Three lookups, not a walk of the data: this runs
    for every committed event while a stream is open."""
    data = event.data
    payload = data.get("payload")
    if payload is not None:
        return EVENT_BYTES + len(payload)
    result = data.get("result")
    if result is not None:
        if type(result) is str:
            return EVENT_BYTES + len(result)
        if type(result) is dict or type(result) is list:
            return EVENT_BYTES + MAX_RESULT_BYTES
        return EVENT_BYTES
    error = data.get("error")
    return EVENT_BYTES if error is None else EVENT_BYTES + len(error)


class RecentEvents:
    """A contiguous run of the last committed events, oldest first (see the module docstring).

    Called on the loop only (EventFeed.on_event hands events from other threads over with
    `call_soon_threadsafe`): nothing here is locked."""

    __slots__ = ("_bytes", "_events", "_last", "_max_bytes", "_start", "_weights")

    def __init__(self, *, max_bytes: int = RING_BYTES) -> None:
        self._max_bytes = max_bytes
        # A list with a moving front (`_start`) rather than a deque: a read slices from the
        # middle, which a deque can only reach by walking from an end.
        self._events: list[Event] = []
        self._weights: list[int] = []
        self._start = 0
        self._bytes = 0
        self._last = -2  #: the seq of the last event appended (-2: none, so any seq starts a run)

    def __len__(self) -> int:
        return len(self._events) - self._start

    def append(self, event: Event) -> None:
        """O(1) amortised: two list appends; the drop of what falls out of the bound comes in
        steps of 1/TRIM_PARTS of the bound. (This runs per committed event while a stream is open: a check of
        both bounds and a drop on every append cost ~0.7 µs an event, this ~0.4.)"""
        seq = event.seq
        if seq != self._last + 1:
            self.clear()  # a hole (or a repeat): what is held no longer runs up to this event
        self._last = seq
        size = weight(event)
        self._events.append(event)
        self._weights.append(size)
        self._bytes += size
        if self._bytes > self._max_bytes:
            self._trim()

    def _trim(self) -> None:
        events, weights, start = self._events, self._weights, self._start
        goal = self._max_bytes - self._max_bytes // TRIM_PARTS
        held = self._bytes
        while held > goal and start < len(events):
            held -= weights[start]
            start += 1
        self._bytes = held
        if start * 2 >= len(events):  # the dropped front is at least half: shift the rest down
            del events[:start], weights[:start]
            start = 0
        self._start = start

    def after(self, cursor: int, limit: int) -> list[Event] | None:
        """Up to `limit` events after `cursor`, exactly the store's first answer to
        `read_events(after=cursor)`; None when the ring cannot tell (older than the run,
        or nothing after the cursor here: other instances' events may follow)."""
        events, start = self._events, self._start
        if start == len(events):
            return None
        at = start + cursor + 1 - events[start].seq
        if at < start or at >= len(events):
            return None
        return events[at : at + limit]

    def clear(self) -> None:
        """Forget every event: the next one appended starts a run."""
        self._last = -2
        self._events.clear()
        self._weights.clear()
        self._start = 0
        self._bytes = 0

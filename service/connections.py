"""Client connections as resources: the file-descriptor limit, the connection cap, and
which connections to shed first. The HTTP side is service/http/protocol.py."""

from __future__ import annotations

import asyncio
import resource
from typing import Protocol

#: Descriptors the process keeps for itself below the limit (listener, store connections,
#: database and log files, PostgreSQL's notification socket): a guess, ~10x what the
#: PostgreSQL store opens.
FD_RESERVE = 256
#: The longest gap between two deadline sweeps: a request is cut off at most this late.
SWEEP_S = 1.0


class Sheddable(Protocol):
    def shed(self) -> bool:
        """End this connection to make room: 503 if it is mid-head, quietly if idle; False
        (and nothing done) if its request head is complete: it is being served."""


class Expiring(Protocol):
    def deadline_passed(self) -> None:
        """Its request (or its wait for a first one) outlived the deadline: cut it off."""


def raise_fd_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit: (soft before, soft now, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    return soft, target, hard


def connection_cap(max_connections: int) -> int:
    """MAX_CONNECTIONS, but at least FD_RESERVE under the current descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - FD_RESERVE))


class ConnectionGate:
    """The open connections of one app, which of them wait for a request head, and when
    each request under way began.

    `waiting` keeps insertion order (a dict): the first key is the connection that
    has waited longest, the one shed first at the cap. A connection enters it each time
    it waits for a request head and leaves it only when it closes or is looked at here:
    one whose head has since completed is then dropped from it (it enters again when it
    next waits), which spares every request a removal. O(1) per request.

    The deadline: `begun` maps a connection whose request (or wait for a first one) is
    under way to the loop time it began, in that order (a connection is removed before
    it is put back). One sweep every `sweep_s` (SWEEP_S, or the deadline if shorter)
    cuts off the connections at its front that have outlived the deadline, so a request
    is cut off between `deadline_s` and `deadline_s + sweep_s` after it began. Not a
    `loop.call_later` timer per request: arming and cancelling one was ~3% of a
    POST /enqueue (py-spy, docs/PERFORMANCE.md, Item 1); a dict entry is ~0.2 µs."""

    def __init__(self, *, cap: int, deadline_s: float) -> None:
        self.cap = cap
        self.deadline_s = deadline_s
        self.open = 0
        self.waiting: dict[Sheddable, None] = {}
        self.shed = 0  #: connections refused with 503 at the cap
        self.evicted = 0  #: waiting connections closed to admit a new one
        self.timed_out = 0  #: requests cut off by the deadline
        self.begun: dict[Expiring, float] = {}
        self.sweep_s = min(SWEEP_S, deadline_s)
        self._sweeper: asyncio.TimerHandle | None = None

    def admit(self) -> bool:
        """Make room for one more connection; False if there is none to make."""
        if self.open >= self.cap:
            waiting = self.waiting
            while waiting:
                victim = next(iter(waiting))
                del waiting[victim]
                if victim.shed():
                    self.evicted += 1
                    break
            else:
                self.shed += 1
                return False
        self.open += 1
        return True

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sweep for passed deadlines while any connection is open (called as one opens)."""
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.sweep_s, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        oldest = loop.time() - self.deadline_s
        due = []
        for connection, began in self.begun.items():
            if began > oldest:
                break  # in order of beginning: the rest began later
            due.append(connection)
        for connection in due:
            del self.begun[connection]
            connection.deadline_passed()
        if self.open:
            self.watch(loop)

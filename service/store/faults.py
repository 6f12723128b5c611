"""Store faults: which driver errors mean "the store cannot be reached or written now".

The ONE classification of driver errors. A driver calls `StoreHealth.failed`
at its choke points (a commit, a read, a LISTEN connection); an outage (a disk
that is full or read-only, a PostgreSQL server that is down, restarting or out
of connections) comes back as `StoreUnavailable` raised `from` the driver's
error, which HTTP answers with 503 and the worker pool waits out. Anything
else (a bad statement, an unexpected constraint) is a bug and is returned
as it is, to stay loud.

The health record is what the rest of the service reads (`/readyz`, the
pool): it goes down on the first unavailable error and up again on the next
successful commit, and it logs each outage once when it begins and once
when it ends.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections.abc import Callable

from domain.backoff import Backoff
from service.clock import now_ms

log = logging.getLogger("kasp.store")

#: How workers wait for a store that is down, and how often they probe it: 0.1 s, a
#: guess at the shortest outage worth not spinning on (a lock held past busy_timeout,
#: a connection reset), doubling to 2 s, so work resumes within 2 s of the store's
#: return (the issue measured a 2.6 s PostgreSQL restart); full jitter, so the workers
#: of several instances do not probe in step.
PROBE_BACKOFF = Backoff(base_ms=100, max_ms=2000)
#: What 503 store_unavailable tells clients: about the pool's longest probe interval.
RETRY_AFTER_S = 2
#: Outages that begin less than this after the last logged one ended are counted, not
#: logged (a guess: a flapping disk or network would otherwise log twice per flap).
QUIET_AFTER_RECOVERY_S = 10.0

# SQLite primary result codes (https://sqlite.org/rescode.html) that mean the file
# cannot be written or reached now; SQLITE_CORRUPT, SQLITE_ERROR (bad SQL) and
# SQLITE_CONSTRAINT are not among them.
_SQLITE_UNAVAILABLE = {
    5: "SQLITE_BUSY",  # locked beyond busy_timeout
    6: "SQLITE_LOCKED",
    7: "SQLITE_NOMEM",
    8: "SQLITE_READONLY",
    10: "SQLITE_IOERR",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL",
}


class StoreUnavailable(Exception):
    """The store cannot be reached or written now; retry later. Raised from the driver's error."""


def is_unavailable(exc: BaseException) -> bool:
    """True for a driver error that means an outage, False for a bug (or not a driver error)."""
    if isinstance(exc, StoreUnavailable | OSError):  # OSError: refused, reset, timed out, no route
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in _SQLITE_UNAVAILABLE
    asyncpg = sys.modules.get("asyncpg")  # loaded only when the PostgreSQL store is chosen
    if asyncpg is None:
        return False
    exceptions = asyncpg.exceptions
    if isinstance(exc, exceptions.InterfaceError):
        # Its subclasses (DataError, ClientConfigurationError, ...) are misuse, and so is
        # "another operation is in progress"; a closed pool or connection is an outage.
        return type(exc) is exceptions.InterfaceError and "clos" in str(exc)
    return isinstance(
        exc,
        exceptions.PostgresConnectionError  # class 08: connection refused, lost, does not exist
        | exceptions.OperatorInterventionError  # class 57: admin/crash shutdown, cannot connect now, timeout
        | exceptions.InsufficientResourcesError  # class 53: too many connections, disk full
        | exceptions.ReadOnlySQLTransactionError  # a standby after a failover
        | exceptions.InternalClientError,  # the protocol broke off mid-message
    )


class StoreHealth:
    """Whether the store is available, since when, and the last outage's error: typed, one per store."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.available = True
        self.since_ms = now_ms()  #: when `available` last changed (or the store was built)
        self.last_error: str | None = None  #: the error that began (or last renewed) the outage
        self._down_at = 0.0  # monotonic
        self._logged_outage = False
        self._quiet_until = 0.0
        self._unlogged = 0
        self._listeners: list[Callable[[bool], None]] = []

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(available)` whenever the store goes down or comes back."""
        self._listeners.append(listener)

    def failed(self, exc: BaseException) -> BaseException:
        """What to raise for the driver error `exc`: StoreUnavailable (and the store is down) or `exc`."""
        if not is_unavailable(exc):
            return exc
        message = str(exc) or type(exc).__name__
        self.last_error = message
        if self.available:
            self._go_down()
        if isinstance(exc, StoreUnavailable):
            return exc
        error = StoreUnavailable(f"the {self.name} store is unavailable ({message}); retry later")
        error.__cause__ = exc  # as `raise error from exc`
        return error

    def raise_if_unavailable(self, exc: BaseException) -> None:
        """Raise StoreUnavailable from `exc` if it is an outage; return if it is a bug (re-raise it)."""
        error = self.failed(exc)
        if error is not exc:
            raise error

    def succeeded(self) -> None:
        """A write reached the store: an outage, if there was one, is over."""
        if self.available:
            return
        self.available = True
        self.since_ms = now_ms()
        self._tell(True)
        if self._logged_outage:
            log.info(
                "the %s store is available again after %.1f s",
                self.name,
                time.monotonic() - self._down_at,
                extra={"action": "store_available"},
            )
            self._quiet_until = time.monotonic() + QUIET_AFTER_RECOVERY_S

    def _go_down(self) -> None:
        self.available = False
        self.since_ms = now_ms()
        self._down_at = time.monotonic()
        self._tell(False)
        self._logged_outage = self._down_at >= self._quiet_until
        if not self._logged_outage:
            self._unlogged += 1
            return
        also = f" ({self._unlogged} brief outages since the last report)" if self._unlogged else ""
        self._unlogged = 0
        log.warning(
            "the %s store is unavailable: %s; requests get 503 and workers wait until it is back%s",
            self.name,
            self.last_error,
            also,
            extra={"action": "store_unavailable"},
        )

    def _tell(self, available: bool) -> None:
        for listener in self._listeners:
            listener(available)

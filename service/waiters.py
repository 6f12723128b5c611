"""Long-polls on one job (`GET /jobs/{id}?wait=S`): woken by the event that finishes it.

A waiter registers a future under its job's id BEFORE it reads the job, then
sleeps on that future until the deadline. The store listener resolves the
futures of a job whose event finished it (and, on a shared store, the remote
listener does the same for another instance's event), and the waiter reads the
job again. Registering first means an event committed between the read and the
sleep still wakes it. No timer or query runs per waiter while it sleeps, and an
event of a job nobody waits on costs one dict lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from domain.events import Event
from domain.projection import JobView
from domain.states import FINISHED_STATES, EventType

#: Event types whose `to` is a finished state: what a remote notification must carry to wake.
FINISHING_TYPES = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})

ReadJob = Callable[[str], Awaitable[JobView | None]]


class JobWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._closed = False

    @property
    def count(self) -> int:
        """Requests waiting now (for tests and benchmarks)."""
        return sum(len(futures) for futures in self._waiting.values())

    def on_event(self, event: Event) -> None:
        """Store listener: on the append path, so a lookup only when someone waits."""
        if self._waiting and event.to_state in FINISHED_STATES:
            self._wake(event.job_id)

    def on_remote_event(self, type_: EventType, due_ms: int | None, job_id: str) -> None:
        """Remote listener: another instance committed `type_` for `job_id`."""
        if type_ in FINISHING_TYPES and self._waiting:
            self._wake(job_id)

    def close(self) -> None:
        """Shutdown: every waiter answers now with what it has, and new ones do not wait."""
        self._closed = True
        for job_id in list(self._waiting):
            self._wake(job_id)

    async def wait_finished(self, job_id: str, timeout_s: float, read: ReadJob) -> JobView | None:
        """The job's view once it is finished, or as it is after `timeout_s` (None if unknown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            futures = self._waiting.setdefault(job_id, set())
            futures.add(fut)
            try:
                view = await read(job_id)
                remaining = deadline - loop.time()
                if view is None or view.state in FINISHED_STATES or remaining <= 0 or self._closed:
                    return view
                await asyncio.wait((fut,), timeout=remaining)
            finally:
                futures.discard(fut)
                if not futures and self._waiting.get(job_id) is futures:
                    del self._waiting[job_id]

    def _wake(self, job_id: str) -> None:
        for fut in self._waiting.get(job_id, ()):
            if not fut.done():
                fut.set_result(None)

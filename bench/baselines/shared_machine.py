"""The engine kasp is measured against: a bare asyncio queue, workers, and one
shared `transitions` machine driving plain job objects (notes §9). No event
log, no projection, no retention, no retries: the least a job runner can do
while still asking a state machine for every move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from transitions import Machine

from domain.processor import Attempt, Processor
from domain.states import MACHINE_CONFIG


class BareJob:
    __slots__ = ("attempts", "id", "max_retries", "payload", "state")

    def __init__(self, job_id: str, payload: str, max_retries: int) -> None:
        self.id = job_id
        self.payload = payload
        self.max_retries = max_retries
        self.state = "queued"
        self.attempts = 0


class BareQueue:
    def __init__(
        self, processor: Processor, *, workers: int, on_done: Callable[[BareJob], None] | None = None
    ) -> None:
        self._machine = Machine(model=None, **MACHINE_CONFIG)
        self._processor = processor
        self._queue: asyncio.Queue[BareJob] = asyncio.Queue()
        self._workers = workers
        self._on_done = on_done
        self._tasks: list[asyncio.Task[None]] = []
        self.jobs: dict[str, BareJob] = {}
        self.done = 0

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"bare-worker-{i}") for i in range(self._workers)
        ]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def enqueue(self, job_id: str, payload: str, max_retries: int) -> None:
        job = BareJob(job_id, payload, max_retries)
        self.jobs[job_id] = job
        self._queue.put_nowait(job)

    async def _work(self) -> None:
        events = self._machine.events
        while True:
            job = await self._queue.get()
            events["started"].trigger(job)
            job.attempts += 1
            try:
                await self._processor(Attempt(job.id, job.payload, job.attempts, job.max_retries))
            except Exception:
                events["failed"].trigger(job)
            else:
                events["succeeded"].trigger(job)
            self.done += 1
            if self._on_done is not None:
                self._on_done(job)

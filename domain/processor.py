"""What runs one attempt of a job; replace it to make kasp do real work.

A processor is any async callable taking an `Attempt`. Returning means the
attempt succeeded, and what it returns is the job's `result`: a JSON value of at
most 64 KiB, or None (domain/results.py; anything else fails the attempt).
Raising any exception means it failed (the exception's text becomes the job's
`last_error`). Point `PROCESSOR=package.module:name` at yours.
Blocking or CPU-heavy code must run in an executor: the pool shares one loop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from domain.backoff import RandomSource


@dataclass(frozen=True, slots=True)
class Attempt:
    job_id: str
    payload: str
    attempt: int  #: the job's attempt number, counted over its whole life
    max_retries: int


class Processor(Protocol):
    async def __call__(self, attempt: Attempt) -> object: ...


class SimulatedFailure(Exception):
    """The simulated processor's stand-in for a real failure."""


class SimulatedProcessor:
    """The default processor: sleeps WORK_MIN_MS..WORK_MAX_MS, fails ERROR_RATE% of attempts."""

    def __init__(
        self,
        *,
        min_ms: int,
        max_ms: int,
        error_rate: int,
        rng: RandomSource | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 <= min_ms <= max_ms:
            raise ValueError(f"need 0 <= min_ms <= max_ms, got {min_ms}..{max_ms}")
        if not 0 <= error_rate <= 100:
            raise ValueError(f"error_rate is a percentage 0..100, got {error_rate}")
        self._min_s = min_ms / 1000
        self._span_s = (max_ms - min_ms) / 1000
        self._fail_below = error_rate / 100
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep

    async def __call__(self, attempt: Attempt) -> None:
        await self._sleep(self._min_s + self._span_s * self._rng.random())
        if self._rng.random() < self._fail_below:
            raise SimulatedFailure("simulated failure")

"""Deterministic processors for tests, selected with PROCESSOR=tests.support.processors:NAME.

`scripted` reads its behaviour from the payload: comma-separated steps, one per
attempt (attempt n uses step n, the last step repeats). A step is `ok`, `fail`,
`sleep=<seconds>` (then succeed), or `sleepfail=<seconds>` (then fail).
"""

from __future__ import annotations

import asyncio

from domain.processor import Attempt


class ScriptedFailure(Exception):
    pass


async def scripted(attempt: Attempt) -> None:
    steps = [s.strip() for s in attempt.payload.split(",")] if attempt.payload else ["ok"]
    step = steps[min(attempt.attempt, len(steps)) - 1]
    name, _, arg = step.partition("=")
    if name in ("sleep", "sleepfail"):
        await asyncio.sleep(float(arg))
    if name in ("fail", "sleepfail"):
        raise ScriptedFailure(f"scripted failure on attempt {attempt.attempt}")


def not_async(attempt: Attempt) -> None:
    """A processor that is not async: PROCESSOR must refuse it."""


async def fail_with_payload(attempt: Attempt) -> None:
    """Every attempt fails with the payload as its error message (any text, U+0000 included)."""
    raise ScriptedFailure(attempt.payload)

"""Deterministic processors for tests, selected with PROCESSOR=tests.support.processors:NAME.

`scripted` reads its behaviour from the payload: comma-separated steps, one per
attempt (attempt n uses step n, the last step repeats). A step is `ok`, `fail`,
`sleep=<seconds>` (then succeed), `sleepfail=<seconds>` (then fail), or `gate=<name>`
(succeed once the test sets `GATES[name]`, then set `PASSED[name]`; in-process servers only).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

from domain.processor import Attempt

GATES: defaultdict[str, threading.Event] = defaultdict(threading.Event)
PASSED: defaultdict[str, threading.Event] = defaultdict(threading.Event)


class ScriptedFailure(Exception):
    pass


async def scripted(attempt: Attempt) -> None:
    steps = [s.strip() for s in attempt.payload.split(",")] if attempt.payload else ["ok"]
    step = steps[min(attempt.attempt, len(steps)) - 1]
    name, _, arg = step.partition("=")
    if name in ("sleep", "sleepfail"):
        await asyncio.sleep(float(arg))
    if name == "gate":
        await asyncio.to_thread(GATES[arg].wait)
        PASSED[arg].set()
    if name in ("fail", "sleepfail"):
        raise ScriptedFailure(f"scripted failure on attempt {attempt.attempt}")


def not_async(attempt: Attempt) -> None:
    """A processor that is not async: PROCESSOR must refuse it."""

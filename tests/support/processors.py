"""Deterministic processors for tests, selected with PROCESSOR=tests.support.processors:NAME.

`scripted` reads its behaviour from the payload: comma-separated steps, one per
attempt (attempt n uses step n, the last step repeats). A step is `ok`, `fail`,
`sleep=<seconds>` (then succeed), `sleepfail=<seconds>` (then fail), `gate=<name>`
(succeed once the test sets `GATES[name]`, then set `PASSED[name]`; in-process servers only),
`raise=<name>` (raise one of RAISES: what a careless or hostile processor does), `forever`
(sleep until cancelled), `swallow` (sleep, swallow the first CancelledError and sleep on:
only a second cancel ends it), or a result step: `result` (return RESULT with the job's id
and attempt), `nonjson` (return a set) or `big` (return a string over 64 KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable

from domain.processor import Attempt

GATES: defaultdict[str, threading.Event] = defaultdict(threading.Event)
PASSED: defaultdict[str, threading.Event] = defaultdict(threading.Event)


class ScriptedFailure(Exception):
    pass


class OddBaseException(BaseException):
    """A BaseException subclass that is none of Python's own."""


async def _awaits_a_cancelled_task() -> None:
    """What a processor sees when a task it waits on is cancelled by someone else."""
    other = asyncio.ensure_future(asyncio.sleep(3600))
    asyncio.get_running_loop().call_soon(other.cancel)
    await other


def _raiser(exc: Callable[[], BaseException]) -> Callable[[], None]:
    def run() -> None:
        raise exc()

    return run


#: `raise=<name>` steps: each a way for a processor to end with something other than a result.
RAISES: dict[str, Callable[[], object]] = {
    "cancelled": _raiser(asyncio.CancelledError),
    "awaited_cancelled": _awaits_a_cancelled_task,
    "system_exit": _raiser(lambda: SystemExit(3)),
    "keyboard_interrupt": _raiser(KeyboardInterrupt),
    "generator_exit": _raiser(GeneratorExit),
    "odd_base_exception": _raiser(lambda: OddBaseException("odd")),
    "surrogate": _raiser(lambda: RuntimeError("cannot parse " + os.fsdecode(b"report-\xff.csv"))),
}


#: What a `result` step returns, with "job" and "attempt" added: every kind of JSON value.
RESULT = {"items": [1, 2.5, "three", None, True, False], "nested": {"ok": True, "text": "é ✓"}}
#: What a `big` step returns: one byte over the 64 KiB a result may take, once quoted as JSON.
BIG_RESULT = "x" * (64 * 1024 - 1)


async def scripted(attempt: Attempt) -> object:
    steps = [s.strip() for s in attempt.payload.split(",")] if attempt.payload else ["ok"]
    step = steps[min(attempt.attempt, len(steps)) - 1]
    name, _, arg = step.partition("=")
    if name == "raise":
        result = RAISES[arg]()
        if asyncio.iscoroutine(result):
            await result
        return None
    if name == "result":
        return {**RESULT, "job": attempt.job_id, "attempt": attempt.attempt}
    if name == "nonjson":
        return {"ids": {1, 2}}
    if name == "big":
        return BIG_RESULT
    if name == "forever":
        await asyncio.sleep(3600)
    if name == "swallow":
        # A careless processor: it swallows the cancellation and goes on as if nothing happened.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)
    if name in ("sleep", "sleepfail"):
        await asyncio.sleep(float(arg))
    if name == "gate":
        await asyncio.to_thread(GATES[arg].wait)
        PASSED[arg].set()
    if name in ("fail", "sleepfail"):
        raise ScriptedFailure(f"scripted failure on attempt {attempt.attempt}")
    return None


def not_async(attempt: Attempt) -> None:
    """A processor that is not async: PROCESSOR must refuse it."""


async def fail_with_payload(attempt: Attempt) -> None:
    """Every attempt fails with the payload as its error message (any text, U+0000 included)."""
    raise ScriptedFailure(attempt.payload)

"""The command line every burn-down runner shares, in whichever virtualenv it runs.

A runner (`python bench/peers/<system>_burn.py PHASE --dsn DSN --jobs N`) does one
phase of a no-op burn-down in a fresh process and prints one JSON line:

- `setup`: install the system's schema into the (fresh, empty) database;
- `enqueue`: admit N jobs with the system's own batch API, in chunks of CHUNK;
- `process`: run the system's worker with CONCURRENCY concurrent jobs until all N
  are done, then stop.

Each phase times itself (`seconds`), so process start-up and imports are not
counted. This module imports nothing from kasp: pgqueuer and procrastinate run it
from .venv-peers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable

import uvloop

#: Worker concurrency of every system: issue 12 measured all of them at 32.
CONCURRENCY = 32
#: Jobs per batch call: kasp's /enqueue/batch takes at most 1,000 (SPEC.md), so every system gets that.
CHUNK = 1_000
#: Every job carries the same 100 bytes, the payload size of `make bench`'s enqueue scenario.
PAYLOAD = "p" * 100

Phase = Callable[[str, int], Awaitable[dict[str, float]]]


def chunks(n: int) -> list[range]:
    """Job numbers 0..n-1 in batches of CHUNK."""
    return [range(i, min(n, i + CHUNK)) for i in range(0, n, CHUNK)]


class Countdown:
    """Counts finished jobs; `wait()` returns once `n` have finished."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.done = asyncio.Event()
        if n == 0:
            self.done.set()

    def tick(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.done.set()

    async def wait(self) -> None:
        await self.done.wait()


def main(phases: dict[str, Phase]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=sorted(phases))
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=0)
    args = parser.parse_args()
    result = uvloop.run(phases[args.phase](args.dsn, args.jobs))
    print(json.dumps(result), flush=True)
    sys.exit(0)

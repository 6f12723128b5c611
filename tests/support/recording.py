"""A processor that writes down every attempt it runs, for tests across processes.

PROCESSOR=tests.support.recording:recorded appends "<job id> <attempt>" to
`$KASP_TEST_RECORD_DIR/<pid>.log` when an attempt begins, then sleeps for the
payload's number of seconds (empty payload: no sleep). Tests read the files of
every instance to prove each attempt ran in exactly one process.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from domain.processor import Attempt


def _record_file() -> Path:
    return Path(os.environ["KASP_TEST_RECORD_DIR"]) / f"{os.getpid()}.log"


async def recorded(attempt: Attempt) -> None:
    with _record_file().open("a") as f:
        f.write(f"{attempt.job_id} {attempt.attempt}\n")
    if attempt.payload:
        await asyncio.sleep(float(attempt.payload))


def read_records(record_dir: Path) -> dict[str, list[tuple[str, int]]]:
    """{pid file name: [(job id, attempt), ...]} for every instance that ran something."""
    records: dict[str, list[tuple[str, int]]] = {}
    for path in sorted(record_dir.glob("*.log")):
        lines = [line.split(" ") for line in path.read_text().splitlines() if line]
        records[path.stem] = [(job_id, int(n)) for job_id, n in lines]
    return records

"""kasp in a subprocess, as `make start` runs it: for signals, exit codes, and load that
must not share a GIL with the test's own clients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.service_process import ServiceProcess

#: Only the processor is fixed; every other setting is the service's default unless the
#: test gives it (LOG_LEVEL=INFO included: the shutdown test reads the log).
DEFAULTS = {"PROCESSOR": "tests.support.processors:scripted"}


@contextmanager
def service_process(env: dict[str, str], tmp_path: Path, store_url: str) -> Iterator[ServiceProcess]:
    """Start kasp (single process) on `store_url` and wait until ready; kill what is left on exit.

    /readyz answers 200 only once after_server_start has run, which Sanic does after
    installing its signal handlers (notes §1): from then on a signal is safe to send."""
    service = ServiceProcess({"STORE": store_url, **env}, tmp_path / "kasp.log", defaults=DEFAULTS)
    try:
        yield service.wait_ready(timeout=20)
    finally:
        service.close()

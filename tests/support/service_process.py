"""kasp as a real subprocess (the Sanic CLI), for signals and crashes.

Single-process by default, as `make start` runs it; `mode=MANAGER` runs Sanic's
default main + worker processes, as the plain `sanic ... --factory` line does.

Started in its own session so a kill reaches the whole group and never the
test runner; `close()` (call it in `finally`) kills whatever is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import wait_until

REPO = Path(__file__).resolve().parents[2]

#: Settings every test service gets unless the test overrides them.
BASE_ENV = {
    "WORKERS": "4",
    "QUEUE_SIZE": "10000",
    "ERROR_RATE": "0",
    "WORK_MIN_MS": "1",
    "WORK_MAX_MS": "3",
    "BACKOFF_BASE_MS": "5",
    "BACKOFF_MAX_MS": "20",
    "SHUTDOWN_TIMEOUT": "5",
    "LOG_LEVEL": "WARNING",
    "PROCESSOR": "tests.support.processors:scripted",
}


SINGLE = ("--single-process",)
MANAGER: tuple[str, ...] = ()  #: Sanic's default: a main process that runs one worker process
#: Manager mode: a signal that reaches main before it has noticed the worker's start-up
#: acknowledgement makes it spin forever (notes §11, a Sanic bug; not observable from outside).
MANAGER_SETTLE_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceProcess:
    """One kasp process. `defaults` are settings applied under `env` (the machine's own
    values for those names are dropped); `address_from_env` gives HOST/PORT as
    environment variables instead of -H/-p, as `make start` users do."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        mode: tuple[str, ...] = SINGLE,
        *,
        defaults: Mapping[str, str] = BASE_ENV,
        address_from_env: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        clean = {
            k: v for k, v in os.environ.items() if k not in defaults and k not in ("STORE", "LEASE_TIMEOUT")
        }
        if address_from_env:
            clean |= {"HOST": "127.0.0.1", "PORT": str(self.port)}
            address: list[str] = []
        else:
            address = ["-H", "127.0.0.1", "-p", str(self.port)]
        self.mode = mode
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sanic", "service.app:create_app", "--factory", *mode,
             *address, "--no-motd"],
            env={**clean, **defaults, **env},
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self, timeout: float = 30.0) -> ServiceProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"kasp exited with {self.proc.returncode} before it was ready:\n{self.log()}"
                )
            try:
                return self.client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=timeout, interval=0.05)
        if self.mode == MANAGER:
            time.sleep(MANAGER_SETTLE_S)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        """Signal the process itself (Sanic's main process), as `kill` or an orchestrator does."""
        self.proc.send_signal(sig)

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the whole process group, as Ctrl-C in a terminal does."""
        os.killpg(self.proc.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"kasp did not exit within {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL the whole group: no shutdown code runs, as in a power loss."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    """The whole log, paged through /events?after= as a client would."""
    return list(iter_events(client))


def iter_events(client: httpx.Client, after: int = 0) -> Iterator[dict[str, Any]]:
    while True:
        page = client.get("/events", params={"after": after, "limit": 1000}).json()
        yield from page["events"]
        if not page["events"]:
            return
        after = page["next_after"]


def wait_quietly(predicate: Any, timeout: float) -> Any:
    """wait_until, tolerating transport errors from a service that is (re)starting."""

    def guarded() -> Any:
        try:
            return predicate()
        except httpx.TransportError:
            return False

    return wait_until(guarded, timeout=timeout, interval=0.05)


__all__ = [
    "BASE_ENV",
    "MANAGER",
    "SINGLE",
    "ServiceProcess",
    "all_events",
    "free_port",
    "iter_events",
    "wait_quietly",
]

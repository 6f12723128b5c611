"""kasp in a subprocess, as `make start` runs it: for signals, exit codes, and load that
must not share a GIL with the test's own clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.server import wait_until

ROOT = Path(__file__).resolve().parents[2]
READY_SETTLE_S = 0.3  # notes §1: Sanic installs its signal handlers just after the first ready answer


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def service_process(
    env: dict[str, str], tmp_path: Path, *, will_signal: bool = False
) -> Iterator[ServiceProcess]:
    """Start `python -m sanic service.app:create_app --factory --single-process` and wait until ready.

    `will_signal`: also wait out the window after the first ready answer in which
    Sanic has not yet installed its signal handlers (notes §1)."""
    port = free_port()
    log_path = tmp_path / "kasp.log"
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PROCESSOR": "tests.support.processors:scripted",
        **env,
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sanic",
                "service.app:create_app",
                "--factory",
                "--single-process",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
                "--no-motd",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a second signal's killpg must never reach pytest (notes §1)
        )
    service = ServiceProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until(lambda: _ready(service), timeout=20, interval=0.05)
        if will_signal:
            time.sleep(READY_SETTLE_S)  # not a wait for a result: nothing observable marks the handlers
        yield service
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _ready(service: ServiceProcess) -> bool:
    if service.proc.poll() is not None:
        raise AssertionError(f"kasp exited with {service.proc.returncode}:\n{service.log()}")
    try:
        return httpx.get(f"{service.url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False

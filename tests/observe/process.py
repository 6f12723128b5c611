"""kasp in a subprocess, as `make start` runs it: for signals, exit codes, and load that
must not share a GIL with the test's own clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.server import wait_until

ROOT = Path(__file__).resolve().parents[2]


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
def service_process(env: dict[str, str], tmp_path: Path) -> Iterator[ServiceProcess]:
    """Start `python -m sanic service.app:create_app --factory --single-process` and wait until ready.

    /readyz answers 200 only once after_server_start has run, which Sanic does after
    installing its signal handlers (notes §1): from then on a signal is safe to send."""
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

"""Run kasp as a user does: the Sanic CLI in a subprocess, signalled for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(self, tmp: Path, env: dict[str, str], args: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"kasp-{self.port}.log"
        full_env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WORK_MIN_MS": "1",
            "WORK_MAX_MS": "3",
            "ERROR_RATE": "0",
            "PROCESSOR": "tests.support.processors:scripted",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sanic", "service.app:create_app", "--factory", "--no-motd", *args],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a manager-mode killpg must never reach pytest
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kasp exited early with {self.proc.returncode}:\n{self.log()}")
            try:
                # /readyz is 200 only after after_server_start: signal handlers are installed.
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"kasp not ready within {timeout} s:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"kasp did not exit within {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[object]:
    services: list[Service] = []

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = ("--single-process",)) -> Service:
        service = Service(tmp_path, env or {}, list(args))
        services.append(service)
        return service

    yield start
    for service in services:
        service.kill()

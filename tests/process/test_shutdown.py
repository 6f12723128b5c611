"""SIGTERM/SIGINT as SPEC.md's Shutdown section describes, against the real CLI process."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.server import wait_until
from tests.support.service_process import ServiceProcess

Start = Callable[..., ServiceProcess]


def post(service: ServiceProcess, job_id: str, payload: str) -> httpx.Response:
    # A fresh connection each time: the listener itself must still be answering.
    return httpx.post(f"{service.url}/enqueue", json={"id": job_id, "payload": payload}, timeout=5)


def state(service: ServiceProcess, job_id: str) -> str:
    return httpx.get(f"{service.url}/jobs/{job_id}", timeout=5).json()["state"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_running_attempts_then_exits_0(start_service: Start, sig: signal.Signals) -> None:
    service = start_service({"WORKERS": "2", "SHUTDOWN_TIMEOUT": "20"})
    service.wait_ready()
    for job_id in ("first", "second"):
        assert post(service, job_id, "sleep=1.5").status_code == 202
    wait_until(lambda: state(service, "first") == state(service, "second") == "running")
    began = time.monotonic()
    service.signal(sig)
    wait_until(lambda: post(service, "late", "").status_code == 503, timeout=5)
    late = post(service, "late", "")
    assert late.json()["error"] == "shutting_down" and late.headers["retry-after"] == "5"
    assert httpx.get(f"{service.url}/readyz").json() == {"status": "draining"}
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    assert state(service, "first") == "running"  # reads still answered while draining
    assert service.wait_exit(timeout=15) == 0
    assert time.monotonic() - began >= 1.0  # it waited for the attempts
    log = service.log()
    assert "drained: 2 attempts ended during shutdown" in log
    assert "first#1 succeeded" in log and "second#1 succeeded" in log
    assert "unfinished" not in log


def test_attempts_still_running_after_the_timeout_are_interrupted(start_service: Start) -> None:
    service = start_service({"WORKERS": "1", "SHUTDOWN_TIMEOUT": "0.5"})
    service.wait_ready()
    assert post(service, "stuck", "sleep=60").status_code == 202
    assert post(service, "behind", "").status_code == 202
    wait_until(lambda: state(service, "stuck") == "running")
    began = time.monotonic()
    service.signal(signal.SIGTERM)
    assert service.wait_exit(timeout=10) == 0
    assert time.monotonic() - began < 5
    log = service.log()
    assert "stuck#1 interrupted" in log
    assert "exiting with 2 unfinished jobs, lost with the memory store: stuck behind" in log


def test_a_second_signal_stops_waiting(start_service: Start) -> None:
    service = start_service({"WORKERS": "1", "SHUTDOWN_TIMEOUT": "60"})
    service.wait_ready()
    assert post(service, "long", "sleep=60").status_code == 202
    wait_until(lambda: state(service, "long") == "running")
    service.signal(signal.SIGTERM)
    wait_until(lambda: httpx.get(f"{service.url}/readyz").status_code == 503, timeout=5)
    service.signal(signal.SIGTERM)
    assert service.wait_exit(timeout=10) == 0
    assert "long#1 interrupted" in service.log()


def test_a_bad_setting_stops_the_start_naming_the_variable(start_service: Start) -> None:
    service = start_service({"WORKERS": "abc"})
    assert service.wait_exit(timeout=20) != 0
    assert "WORKERS='abc': not an integer (expected 1..10000)" in service.log()


def test_a_processor_that_cannot_be_loaded_stops_the_start(start_service: Start) -> None:
    service = start_service({"PROCESSOR": "tests.support.processors:not_async"})
    assert service.wait_exit(timeout=20) != 0
    assert "PROCESSOR='tests.support.processors:not_async': must be an async callable" in service.log()


def test_several_worker_processes_are_refused_with_the_memory_store(start_service: Start) -> None:
    service = start_service({}, args=("--workers", "2"))
    assert service.wait_exit(timeout=30) != 0
    assert "STORE=memory keeps every job in one process" in service.log()

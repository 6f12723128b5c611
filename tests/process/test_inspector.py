"""`sanic inspect kasp_*`: the real Sanic CLI against a real kasp under Sanic's worker manager.

Memory store only: the commands are HTTP clients of the API (GET /stats, GET /jobs,
POST /jobs/{id}/retry, POST /drain), whose behaviour on every store tests/api and
tests/access cover; a manager-mode process per store would add little but time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from tests.conftest import one_store
from tests.support.server import wait_until
from tests.support.service_process import REPO, ServiceProcess, free_port

TOKEN = "inspector-token"
MANAGER_MODE: tuple[str, ...] = ()  # no --single-process: Sanic runs its Inspector only under the manager

StartService = Callable[..., ServiceProcess]

pytestmark = one_store("the commands are HTTP clients of the API, tested on every store elsewhere")


def inspect(port: int, command: str, *, api_key: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    key = ["-k", api_key] if api_key is not None else []
    return subprocess.run(
        [sys.executable, "-m", "sanic", "inspect", command, "-H", "127.0.0.1", "-p", str(port), *key],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def inspect_json(port: int, command: str) -> Any:
    done = inspect(port, command)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def start_with_inspector(start_service: StartService) -> tuple[ServiceProcess, int]:
    port = free_port()
    service = start_service(
        {"INSPECTOR": "1", "INSPECTOR_PORT": str(port), "API_TOKEN": TOKEN, "WORKERS": "2"}, MANAGER_MODE
    ).wait_ready()

    def inspector_up() -> bool:
        return inspect(port, "kasp_stats").returncode == 0

    wait_until(inspector_up, timeout=30, interval=0.2)
    return service, port


def test_kasp_stats_prints_the_counters_of_stats(start_service: StartService) -> None:
    service, port = start_with_inspector(start_service)
    client = service.client
    assert client.post("/enqueue", json={"id": "s1", "payload": "ok"}, headers=auth()).status_code == 202
    wait_until(lambda: client.get("/jobs/s1").json()["state"] == "done")
    stats = inspect_json(port, "kasp_stats")
    assert stats == client.get("/stats").json()
    assert stats["jobs"]["done"] == 1 and stats["workers"]["size"] == 2
    refused = inspect(port, "kasp_stats", api_key=None)  # the Inspector's API key is API_TOKEN
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr


def test_kasp_retry_failed_requeues_every_failed_job(start_service: StartService) -> None:
    service, port = start_with_inspector(start_service)
    client = service.client
    for i in range(3):
        client.post("/enqueue", json={"id": f"f{i}", "payload": "fail,ok"}, headers=auth())
    client.post("/enqueue", json={"id": "fine", "payload": "ok"}, headers=auth())
    wait_until(lambda: client.get("/stats").json()["jobs"]["failed"] == 3)
    assert inspect_json(port, "kasp_retry_failed") == {"requeued": 3, "refused": {}}
    wait_until(lambda: client.get("/stats").json()["jobs"]["done"] == 4)
    types = [e["type"] for e in client.get("/jobs/f0/events").json()["events"]]
    assert types == ["enqueued", "started", "failed", "requeued", "started", "succeeded"]


def test_kasp_drain_stops_new_work_and_keeps_the_process(start_service: StartService) -> None:
    service, port = start_with_inspector(start_service)
    client = service.client
    assert (
        client.post("/enqueue", json={"id": "long", "payload": "sleep=1"}, headers=auth()).status_code == 202
    )
    wait_until(lambda: client.get("/jobs/long").json()["state"] == "running")
    assert inspect_json(port, "kasp_drain")["status"] == "draining"
    assert client.get("/readyz").status_code == 503
    refused = client.post("/enqueue", json={"id": "late", "payload": "ok"}, headers=auth())
    assert refused.status_code == 503 and refused.json()["error"] == "shutting_down"
    wait_until(lambda: client.get("/jobs/long").json()["state"] == "done", timeout=15)  # it finished
    assert service.proc.poll() is None  # and the process lives on, reads answering
    assert client.get("/stats").json()["accepting"] is False
    assert client.get("/healthz").status_code == 200
    assert service.terminate(timeout=30) == 0, service.log()

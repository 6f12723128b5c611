"""`sanic ... --workers N`: allowed (and used) with PostgreSQL, refused with SQLite."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.recording import read_records
from tests.support.service_process import ServiceProcess, wait_quietly

JOBS = 200


def test_sqlite_refuses_several_worker_processes(tmp_path: Path) -> None:
    env = {"STORE": f"sqlite:///{tmp_path / 'kasp.db'}"}
    service = ServiceProcess(env, tmp_path / "kasp.log", mode=("--workers", "2"))
    try:
        assert service.proc.wait(60) != 0
    finally:
        service.close()
    assert "the SQLite store is served by one process" in service.log_path.read_text()


def test_postgres_runs_several_worker_processes_on_one_queue(fresh_pg: str, tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    env = {
        "STORE": fresh_pg,
        "WORKERS": "4",
        "PROCESSOR": "tests.support.recording:recorded",
        "KASP_TEST_RECORD_DIR": str(records),
    }
    service = ServiceProcess(env, tmp_path / "kasp.log", mode=("--workers", "2"))
    try:
        service.wait_ready()
        time.sleep(1.0)  # manager mode: signal only once both workers are up (notes §1)
        for i in range(JOBS):
            r = service.client.post("/enqueue", json={"id": f"job-{i}", "payload": "0.02"})
            assert r.status_code == 202, r.text
        wait_quietly(lambda: service.client.get("/stats").json()["jobs"]["done"] == JOBS, timeout=60)
        assert service.terminate() == 0
    finally:
        service.close()
    ran = read_records(records)
    assert len(ran) == 2 and all(ran.values()), "both worker processes ran attempts"
    attempts = [pair for pairs in ran.values() for pair in pairs]
    assert sorted(attempts) == sorted((f"job-{i}", 1) for i in range(JOBS))

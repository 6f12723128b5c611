"""SQLite on a disk that fills up or is read-only: 503s, an intact file, and recovery by itself.

On a small tmpfs the test mounts (CI runs as root; skipped where mounting is
refused). SQLite only: PostgreSQL's outages are in test_postgres_outage.py, and the
memory store cannot fail this way.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from service.config import Config
from tests.faults.load import EnqueueLoad, wait_all_finished
from tests.support.processors import GATES, PASSED
from tests.support.server import FAST, RunningServer, wait_until
from tests.support.service_process import ServiceProcess
from tests.support.small_fs import bind_read_only, fill, unmount


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        result: str = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return result
    finally:
        conn.close()


def test_a_full_disk_gives_503_keeps_the_file_intact_and_service_resumes(
    small_disk: Path, tmp_path: Path
) -> None:
    db = small_disk / "kasp.db"
    config = Config(
        **{
            **FAST,
            "processor": "tests.support.processors:scripted",
            "store": f"sqlite:///{db}",
            "workers": 4,
            "queue_size": 100_000,
        }
    )  # type: ignore[arg-type]
    server = RunningServer(config).start()
    client = httpx.Client(base_url=server.url, timeout=15)
    filler = small_disk / "filler"
    load = EnqueueLoad(server.url)
    gate = f"full-disk-{tmp_path.name}"
    try:
        # A job that ends while the disk is full: its outcome is kept until it can be written.
        assert client.post("/enqueue", json={"id": "slow", "payload": f"gate={gate}"}).status_code == 202
        wait_until(lambda: client.get("/jobs/slow").json()["state"] == "running")
        load.start()
        load.wait_for(202, more_than=20)
        fill(filler)
        load.wait_for(503, more_than=20)
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (503, "store_unavailable")
        assert client.get("/healthz").status_code == 200
        GATES[gate].set()
        wait_until(PASSED[gate].is_set)
        load.wait_for(503, more_than=load.count(503) + 20)  # the outcome's write fails meanwhile
        assert client.get("/jobs/slow").json()["state"] == "running"
        assert _integrity(db) == "ok"
        filler.unlink()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=10)
        accepted_before = load.count(202)
        load.wait_for(202, more_than=accepted_before + 20)
        load.stop()
        load.check_answers()
        wait_all_finished(client, load.accepted() | {"slow"})
    finally:
        GATES[gate].set()  # never leave the attempt's thread waiting
        load.stop()
        client.close()
        server.stop()
    assert _integrity(db) == "ok"


def test_a_read_only_file_refuses_to_start_with_a_clear_message(small_disk: Path, tmp_path: Path) -> None:
    db = small_disk / "kasp.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    read_only = tmp_path / "ro"
    bind_read_only(small_disk, read_only)
    service = ServiceProcess({"STORE": f"sqlite:///{read_only / 'kasp.db'}"}, tmp_path / "kasp.log")
    try:
        assert service.wait_exit(timeout=30) != 0
        log = service.log()
        assert "cannot be written" in log and "kasp does not start on a store it cannot write" in log, log
        assert log.strip().splitlines()[-1].startswith("kasp: the SQLite file"), log  # the last word
    finally:
        service.close()
        unmount(read_only)

"""POST /enqueue's job-control fields: priority, timeout_ms, run_at / delay_ms; strict and exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.api.test_enqueue import assert_error, event_count


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


@pytest.mark.parametrize(
    ("extra", "field", "code"),
    [
        ({"colour": "red"}, "colour", "unknown_field"),
        ({"maxRetries": 1}, "maxRetries", "unknown_field"),
        ({"priority": 101}, "priority", "invalid_field"),
        ({"priority": -101}, "priority", "invalid_field"),
        ({"priority": 1.0}, "priority", "invalid_field"),
        ({"priority": True}, "priority", "invalid_field"),
        ({"priority": "5"}, "priority", "invalid_field"),
        ({"priority": None}, "priority", "invalid_field"),
        ({"timeout_ms": -1}, "timeout_ms", "invalid_field"),
        ({"timeout_ms": 86_400_001}, "timeout_ms", "invalid_field"),
        ({"timeout_ms": 2.5}, "timeout_ms", "invalid_field"),
        ({"delay_ms": -1}, "delay_ms", "invalid_field"),
        ({"delay_ms": 31_536_000_001}, "delay_ms", "invalid_field"),
        ({"delay_ms": "10"}, "delay_ms", "invalid_field"),
        ({"run_at": "2026-11-29T02:01:19"}, "run_at", "invalid_field"),  # no offset
        ({"run_at": "2026-11-29"}, "run_at", "invalid_field"),
        ({"run_at": "tomorrow"}, "run_at", "invalid_field"),
        ({"run_at": 1764000000000}, "run_at", "invalid_field"),
        ({"run_at": "2026-13-01T00:00:00Z"}, "run_at", "invalid_field"),
        ({"run_at": _at(timedelta(days=366))}, "run_at", "invalid_field"),
        ({"run_at": _at(timedelta(seconds=1)), "delay_ms": 1000}, "delay_ms", "invalid_field"),
    ],
)
def test_a_bad_job_control_field_is_a_400_naming_it_and_changes_nothing(
    client: httpx.Client, extra: dict[str, Any], field: str, code: str
) -> None:
    before = event_count(client)
    response = client.post("/enqueue", json={"id": "j", "payload": "", **extra})
    body = assert_error(response, 400, code, field=field)
    assert field in body["message"]
    assert event_count(client) == before
    assert client.get("/jobs/j").status_code == 404


def test_every_field_is_kept_and_shown(client: httpx.Client) -> None:
    body = {"id": "full", "payload": "forever", "max_retries": 2, "priority": -7, "timeout_ms": 0}
    assert client.post("/enqueue", json={**body, "delay_ms": 3_600_000}).status_code == 202
    job = client.get("/jobs/full").json()
    assert (job["priority"], job["timeout_ms"], job["state"], job["result"]) == (-7, 0, "queued", None)
    assert job["next_attempt_at"] is not None
    enqueued = client.get("/jobs/full/events").json()["events"][0]
    assert enqueued["data"] == {
        "payload": "forever",
        "max_retries": 2,
        "priority": -7,
        "timeout_ms": 0,
        "run_at": job["next_attempt_at"],
    }
    defaults = {"id": "plain", "payload": ""}
    assert client.post("/enqueue", json=defaults).status_code == 202
    data = client.get("/jobs/plain/events").json()["events"][0]["data"]
    assert (data["priority"], data["timeout_ms"], data["run_at"]) == (0, None, None)


@pytest.mark.parametrize(
    ("first", "again", "status"),
    [
        ({}, {"priority": 0, "max_retries": 0}, 200),  # omitted max_retries and priority are 0
        ({"priority": 5}, {"priority": 5}, 200),
        ({"priority": 5}, {}, 409),
        ({"priority": 5}, {"priority": 6}, 409),
        ({"timeout_ms": 1000}, {"timeout_ms": 1000}, 200),
        ({}, {"timeout_ms": 300000}, 409),  # an omitted timeout_ms equals only an omitted one
        ({"timeout_ms": 300000}, {}, 409),
        ({"delay_ms": 60_000}, {"delay_ms": 5}, 200),  # the schedule is not compared
        ({"delay_ms": 60_000}, {"run_at": _at(timedelta(hours=2))}, 200),
        ({}, {"delay_ms": 60_000}, 200),
    ],
)
def test_identity_compares_payload_max_retries_priority_and_timeout(
    client: httpx.Client, first: dict[str, Any], again: dict[str, Any], status: int
) -> None:
    job = {"id": "same", "payload": ""}
    assert client.post("/enqueue", json={**job, **first}).status_code == 202
    before = client.get("/jobs/same").json()
    response = client.post("/enqueue", json={**job, **again})
    assert response.status_code == status, response.text
    if status == 409:
        assert response.json()["error"] == "conflict"
    after = client.get("/jobs/same").json()
    assert after["next_attempt_at"] == before["next_attempt_at"], "a re-send never moves a schedule"
    assert len(client.get("/jobs/same/events").json()["events"]) >= 1


def test_run_at_accepts_any_offset_and_sub_millisecond_digits(client: httpx.Client) -> None:
    due = datetime.now(UTC) + timedelta(hours=1)
    local = due.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(timespec="microseconds")
    assert client.post("/enqueue", json={"id": "offset", "payload": "", "run_at": local}).status_code == 202
    expected = due.replace(microsecond=due.microsecond // 1000 * 1000)
    assert client.get("/jobs/offset").json()["next_attempt_at"] == (
        expected.strftime("%Y-%m-%dT%H:%M:%S.") + f"{expected.microsecond // 1000:03d}Z"
    )

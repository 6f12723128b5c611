"""Strings round-trip exactly on every store, U+0000 included (valid JSON text, which
PostgreSQL's `text` cannot hold as it is); a key holding U+0000 simply matches nothing."""

from __future__ import annotations

from domain import job
from domain.backoff import Backoff
from service.clock import now_ms
from service.store import EventStore
from tests.store.conftest import StoreHarness

TEXT = 'nul \x00 in the middle, "quotes", \\ backslash, é, 漢字, emoji 🎉, \n newline'


class Half:
    def random(self) -> float:
        return 0.5


def test_a_payload_and_an_error_holding_nul_round_trip(store: EventStore, harness: StoreHarness) -> None:
    view, created = harness.run(store.enqueue(job.enqueue("s", TEXT, 1, at_ms=now_ms()), capacity=10))
    assert created and view.payload == TEXT
    running = harness.claim_one(store)
    assert running is not None and running.payload == TEXT
    retry = job.fail(running, error=TEXT, at_ms=now_ms(), duration_ms=1, policy=Backoff(1, 1), rng=Half())
    harness.run(store.append(retry))
    stored = harness.run(store.get_job("s"))
    assert stored is not None and (stored.payload, stored.last_error) == (TEXT, TEXT)
    events = harness.run(store.job_events("s")) or []
    assert events[0].data["payload"] == TEXT and events[-1].data["error"] == TEXT
    listed = harness.run(store.list_jobs(state=None, limit=10, cursor=0))
    assert [v.payload for v in listed.jobs] == [TEXT]


def test_a_key_holding_nul_matches_nothing(store: EventStore, harness: StoreHarness) -> None:
    harness.run(store.enqueue(job.enqueue("a", "p", 0, at_ms=now_ms()), capacity=10))
    assert harness.run(store.get_job("\x00")) is None
    assert harness.run(store.get_job("a\x00")) is None
    assert harness.run(store.job_events("\x00")) is None
    assert harness.run(store.read_events(after=0, limit=10, job_id="\x00", type=None)) == []
    assert len(harness.run(store.read_events(after=0, limit=10, job_id="a", type=None))) == 1

"""A subscriber that never reads: it must not hold memory without bound, and it is dropped."""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Callable

import httpx
import pytest

from service import feed as feed_module
from service import stream_pages
from service.http import stream as stream_module
from service.parts import parts_of
from tests.support.server import RunningServer, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]

PAYLOAD = "x" * (256 * 1024)  # every `enqueued` message carries its payload: 256 KiB a job
BLOCKED_S = 0.5  # a send waiting this long is waiting for the client, not for the CPU


def stream_memory(snapshot: tracemalloc.Snapshot) -> tuple[int, int]:
    """Bytes still allocated by the stream code: (its chunks, the feed's shared message cache)."""

    def held(*filters: tracemalloc.Filter) -> int:
        return sum(stat.size for stat in snapshot.filter_traces(filters).statistics("filename"))

    in_feed = tracemalloc.Filter(True, feed_module.__file__, all_frames=True)
    not_in_feed = tracemalloc.Filter(False, feed_module.__file__, all_frames=True)
    in_stream = tracemalloc.Filter(True, stream_module.__file__, all_frames=True)
    return held(in_stream, not_in_feed), held(in_feed)


def test_a_stalled_subscriber_is_dropped_and_memory_stays_bounded(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last message waits for the client this long before the socket is aborted; production
    # uses 1 s, the test needs time for its memory snapshots before it reads.
    monkeypatch.setattr(stream_module, "DROP_FLUSH_S", 60.0)
    server, client = make_server(stream_send_timeout=3.0, retain_finished=5, queue_size=1000)
    feed = parts_of(server.app).feed
    tracemalloc.start(10)
    try:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill the kernel's buffers sooner
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(b"GET /events/stream HTTP/1.1\r\nHost: kasp\r\n\r\n")  # and never read
        sub = wait_until(lambda: next(iter(feed.subscriptions), None))

        # Append until the kernel's socket buffers are full and the server's send blocks.
        def blocked() -> bool:
            since = sub.sending_since
            return since is not None and time.monotonic() - since > BLOCKED_S

        jobs = caught_up = 0  # fill jobs enqueued; of them, those the stream had sent at a check
        while not blocked():
            assert jobs < 200, "the subscriber's send never blocked"
            client.post("/enqueue", json={"id": f"fill-{jobs}", "payload": PAYLOAD})
            jobs += 1
            seq = last_seq(client)
            # >=: the job's later events may have landed between the enqueue and /stats.
            wait_until(lambda seq=seq: blocked() or sub.cursor >= seq, timeout=10, interval=0.05)
            if sub.cursor >= seq:
                caught_up = jobs
        held_at_stall = stream_memory(tracemalloc.take_snapshot())
        cursor_at_stall = sub.cursor

        # 40 more jobs (10 MiB of messages) while it is stalled: nothing more is held for it.
        for i in range(40):
            client.post("/enqueue", json={"id": f"more-{i}", "payload": PAYLOAD})
        # The workers never wait for the stream: every job finishes while it is stuck.
        wait_until(lambda: last_seq(client) == 3 * (jobs + 40), timeout=10)  # enqueued, started, succeeded
        held_after = stream_memory(tracemalloc.take_snapshot())
        assert sub.cursor == cursor_at_stall
    finally:
        tracemalloc.stop()

    # The stream unsubscribes a moment after it counts the drop: wait for both.
    wait_until(lambda: feed.dropped["slow_consumer"] == 1 and feed.subscriptions == set(), timeout=10)
    # A client that reads again in time gets the last message, then the end of the stream.
    stalled.settimeout(10)
    received = bytearray()
    while chunk := stalled.recv(1 << 20):
        received += chunk
    stalled.close()
    tail = bytes(received[-1000:])
    assert b"event: dropped\ndata: " in tail
    assert b'"reason":"slow_consumer"' in tail
    assert f'"last_seq":{cursor_at_stall}'.encode() in tail
    assert tail.endswith(b"\r\n0\r\n\r\n")

    (stream_at_stall, cache_at_stall), (stream_after, cache_after) = held_at_stall, held_after
    print(
        f"\nstalled subscriber: stream chunks {stream_at_stall / 1024:.0f} KiB at the stall, "
        f"{stream_after / 1024:.0f} KiB after 10 MiB more were appended; shared message cache "
        f"{cache_at_stall / 1024:.0f} -> {cache_after / 1024:.0f} KiB; "
        f"transport buffer peak {sub.peak_buffered_bytes / 1024:.0f} KiB"
    )
    # Nothing grows while it is stalled ...
    assert stream_after <= stream_at_stall + 64 * 1024
    assert cache_after <= cache_at_stall + 64 * 1024
    # ... and what it holds is one chunk in flight, one in the transport's buffer, and the page
    # of events it was sending: the jobs enqueued since it last caught up (a send slowed by the
    # filling buffers lets a few pile up). The store decodes their payloads within the stream's
    # read on PostgreSQL; the memory store's are the request's own objects, not counted here.
    in_page = jobs - caught_up
    assert stream_after <= 2 * (len(PAYLOAD) + stream_pages.CHUNK_BYTES) + in_page * len(PAYLOAD), in_page
    assert cache_after <= feed_module.FORMAT_CACHE_BYTES + 64 * 1024


def last_seq(client: httpx.Client) -> int:
    return int(client.get("/stats").json()["events"]["last_seq"])

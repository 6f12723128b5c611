"""An event's stream message: the same bytes however it is built, and the JSON json.dumps writes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from domain.events import Event
from domain.states import EventType, JobState
from service.feed import _message_from_dict, sse_message

#: Any text, lone surrogates included (hypothesis leaves category Cs out unless told not to).
TEXT = st.text(st.characters(exclude_categories=(), include_characters='\x00\u2028\u2029\x7f"\\'))
#: Floats whose shortest form is the same in orjson and `repr` (orjson writes `1e16` for
#: `1e+16` and `1e-5` for `1e-05`: a documented difference, compared by value below).
PLAIN_FLOATS = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: f == 0 or 1e-4 <= abs(f) < 1e16
)
INTS = st.integers() | st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30])
JSON = st.recursive(
    st.none() | st.booleans() | INTS | PLAIN_FLOATS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    return Event(
        draw(st.sampled_from(list(EventType))),
        draw(TEXT | st.from_regex(r"[A-Za-z0-9_.:@~-]{1,128}", fullmatch=True)),
        draw(st.integers(0, 4_102_444_800_000)),  # up to 2100
        draw(st.none() | st.sampled_from(list(JobState))),
        draw(st.sampled_from(list(JobState))),
        draw(st.none() | st.integers(0, 10**6)),
        draw(st.integers(1, 10**6)),
        draw(st.dictionaries(TEXT, JSON, max_size=5)),
        draw(st.integers(0, 2**62)),
    )


def by_json_dumps(event: Event) -> bytes:
    """The message as the stdlib writes it: compact, non-ASCII kept, lone surrogates escaped."""
    text = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
    data = text.encode("utf-8", "backslashreplace")
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (event.seq, event.type.value.encode(), data)


def odd(job_id: str = "j", **data: Any) -> Event:
    at_ms = 1_764_600_000_123
    return Event(EventType.SUCCEEDED, job_id, at_ms, JobState.RUNNING, JobState.DONE, 3, 4, data, 9)


@given(events())
@example(odd("lone-\udcff"))
@example(odd(result='nul \x00, line \u2028, para \u2029, del \x7f, é ✓ \U0001f600, "q" \\ b'))
@example(odd(result={"big": 2**64, "neg": -(2**63) - 1, "huge": 10**40}))
@example(odd(error="cannot parse report-\udcff.csv"))
@example(odd("ünï-ID", result=["\ud800", {"\udfff": None}]))
@example(Event(EventType.ENQUEUED, "x", 0, None, JobState.QUEUED, None, 1, {}, 0))
@example(Event(EventType.STARTED, "x", 999, JobState.QUEUED, JobState.RUNNING, 1234567, 2, {}, 2**62))
def test_the_message_is_the_bytes_of_the_events_dict_and_of_json_dumps(event: Event) -> None:
    message = sse_message(event)
    assert message == _message_from_dict(event)
    assert message == by_json_dumps(event)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_is_the_same_value_however_it_is_spelt(value: float) -> None:
    message = sse_message(odd(result=value))
    assert message == _message_from_dict(odd(result=value))
    data = message.split(b"\ndata: ", 1)[1]
    assert json.loads(data)["data"]["result"] == value

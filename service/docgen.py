"""`make doc`: write docs/DOCUMENTATION.md and docs/state-diagram.svg from the code.

Every table comes from the definition it documents: configuration from
service.config.SETTINGS, the API from service.openapi, events and the state diagram
from domain.states (the `transitions` machine definition, drawn by transitions'
own GraphMachine: Mermaid text for GitHub, an SVG by graphviz's `dot` for /docs/).
The output is deterministic, so tests/docs/ can fail when the committed files
differ from what this module writes.

    python -m service.docgen docs/DOCUMENTATION.md
"""

from __future__ import annotations

import copy
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from swagger_ui_bundle import swagger_ui_path
from transitions.extensions import GraphMachine

from domain.states import INITIAL_STATE, MACHINE_CONFIG, TRANSITIONS, EventType, JobState
from service.config import SETTINGS
from service.openapi import document

DIAGRAM_TITLE = "Job lifecycle"
SVG_NAME = "state-diagram.svg"
DIAGRAM_FONT = "DejaVu Sans"  # Debian's fonts-dejavu-core, installed with graphviz: same metrics, same SVG

STATE_DOCS: dict[JobState, str] = {
    JobState.QUEUED: "waiting for a worker: ready now, or waiting out a retry delay or its `run_at` "
    "(`next_attempt_at` set)",
    JobState.RUNNING: "a worker is running an attempt",
    JobState.DONE: "an attempt succeeded; its `result` is the processor's answer (final)",
    JobState.FAILED: "the last attempt of its budget failed; `POST /jobs/{id}/retry` sends it back "
    "to `queued`",
    JobState.CANCELLED: "cancelled by `POST /jobs/{id}/cancel` while queued or running; "
    "`POST /jobs/{id}/retry` sends it back to `queued`",
}

# event type -> (when it is recorded, the keys of its `data`; "?" marks a key that may be absent).
# tests/docs/ checks these keys against the events a real server writes.
EVENT_DOCS: dict[EventType, tuple[str, tuple[str, ...]]] = {
    EventType.ENQUEUED: (
        "accepted by `POST /enqueue`; `timeout_ms` is null when omitted, `run_at` is when a "
        "`run_at`/`delay_ms` request made the job due (a past time: the enqueue itself), null if neither",
        ("payload", "max_retries", "priority", "timeout_ms", "run_at"),
    ),
    EventType.STARTED: (
        "a worker begins attempt n (n = 1, 2, ...); `waited_ms`: how long the job was ready before",
        ("waited_ms",),
    ),
    EventType.SUCCEEDED: (
        "the attempt succeeded; `result`: the JSON value the processor returned (null for none)",
        ("duration_ms", "result"),
    ),
    EventType.RETRY_SCHEDULED: (
        "the attempt failed and retries remain; `reason`: `timeout` (over its time limit) or `error`",
        ("error", "reason", "duration_ms", "delay_ms", "next_attempt_at"),
    ),
    EventType.FAILED: (
        "the attempt failed and no retries remain; `reason`: `timeout` or `error`",
        ("error", "reason", "duration_ms"),
    ),
    EventType.REQUEUED: (
        "`POST /jobs/{id}/retry` of a failed or cancelled job: ready now, with a fresh budget of "
        "`1 + max_retries` attempts",
        (),
    ),
    EventType.INTERRUPTED: (
        "the attempt was cut off; `reason`: `shutdown` (forced), `lease_expired` or `restart`; "
        "its attempt is given back",
        ("reason", "duration_ms?"),
    ),
    EventType.CANCELLED: (
        "`POST /jobs/{id}/cancel`: a queued job at once (no attempt, no data), a running one's "
        "attempt cut off (that attempt's number and `duration_ms`; the attempt stays counted)",
        ("duration_ms?",),
    ),
}


def _keys(keys: tuple[str, ...]) -> str:
    if not keys:
        return "none"
    return ", ".join(f"`{k[:-1]}` (optional)" if k.endswith("?") else f"`{k}`" for k in keys)


OVERVIEW = """\
kasp is an HTTP service for background jobs. It accepts jobs over HTTP, keeps them in
a bounded queue, and runs them on a pool of asyncio workers, retrying failed attempts
with exponential backoff and full jitter. Every job is a state machine; every state
change is an event appended to an event log, and the current state of every job is a
projection of that log, so `GET /jobs/{id}` and the log can never disagree.

- Start it with `make start` (serves on `0.0.0.0:8080`), or with the Sanic CLI:
  `sanic service.app:create_app --factory --single-process`.
- Browse the API in Swagger UI at [`/swagger/`](/swagger/); the OpenAPI 3 document is
  [`/openapi.json`](/openapi.json). This page is served at [`/docs/`](/docs/), its
  Markdown source at [`/docs/DOCUMENTATION.md`](/docs/DOCUMENTATION.md).
- Everything these pages load is served by kasp itself: they work with no internet."""

BUILD_NOTES = """\
`make doc` runs `python -m service.docgen docs/DOCUMENTATION.md`, which writes this file
and `docs/state-diagram.svg` from the code (`service/docgen.py`):

| section | source |
|---|---|
| Configuration | `service.config.SETTINGS`, the table that also parses the environment |
| Job states, event catalogue | `domain.states` (`JobState`, `EventType`, `TRANSITIONS`) |
| State diagram | `domain.states.MACHINE_CONFIG`, drawn by `transitions`' `GraphMachine`: \
the `mermaid` engine gives the `stateDiagram-v2` block (GitHub renders it), \
the `graphviz` engine and Debian's `dot` give the SVG |
| HTTP API | the OpenAPI document `service.openapi` serves at `/openapi.json` |

The output is deterministic. `tests/docs/` fails when the committed files differ from
what `make doc` would write, when a route is registered without an OpenAPI operation
(or the other way round), and when a real response does not match its schema.
`make doc` installs graphviz and the DejaVu fonts (the SVG's layout depends on font
metrics) with apt when `dot` is missing. The `/docs/` page is this file rendered by
the `markdown` package once, when the server starts.

The OpenAPI document is written by hand in `service/openapi.py` (small schema dicts,
limits imported from the handlers) rather than generated by sanic-ext, which costs a
small route about a quarter of its throughput and loads its UI from a CDN. Swagger UI's
files come from the `swagger-ui-bundle` PyPI package ({swagger_ui}), which renders
OpenAPI 3.0 fully, hence OpenAPI {openapi}. `make test` runs both pages in Debian's
headless Chromium and fails on any request that leaves localhost or any console error;
screenshots land in `test-artifacts/`."""


def _styles(*, font: str | None) -> dict[str, Any]:
    """GraphMachine's styles for drawing the definition rather than a job: the initial
    state gets a double border instead of the red "current state" highlight."""
    styles: dict[str, Any] = copy.deepcopy(GraphMachine.style_attributes)
    styles["node"]["active"] = {"color": "black", "fillcolor": "white", "peripheries": "2"}
    if font is not None:
        for kind in ("node", "edge", "graph"):
            styles[kind]["default"]["fontname"] = font
    return styles


class _MermaidGraph(GraphMachine):
    style_attributes: dict[str, Any] = _styles(font=None)


class _SvgGraph(GraphMachine):
    style_attributes: dict[str, Any] = _styles(font=DIAGRAM_FONT)


def state_diagram_mermaid() -> str:
    machine = _MermaidGraph(graph_engine="mermaid", title=DIAGRAM_TITLE, **MACHINE_CONFIG)
    lines = [line.rstrip() for line in machine.get_graph().draw(None).splitlines()]
    # transitions writes the title as a bare front-matter line; Mermaid reads `title: ...`.
    if lines[:3] == ["---", DIAGRAM_TITLE, "---"]:
        lines[1] = f"title: {DIAGRAM_TITLE}"
    return "\n".join(lines)


def state_diagram_svg() -> bytes:
    if shutil.which("dot") is None:
        raise SystemExit(
            "kasp docgen: graphviz's `dot` is needed to draw the state diagram "
            "(apt-get install graphviz fonts-dejavu-core; `make doc` does it)"
        )
    machine = _SvgGraph(graph_engine="graphviz", title=DIAGRAM_TITLE, **MACHINE_CONFIG)
    svg: bytes = machine.get_graph().draw(None, format="svg", prog="dot")
    # The graphviz version comment changes with every Debian point release; the drawing does not.
    return re.sub(rb"<!-- Generated by graphviz version [^>]*-->\n", b"", svg)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def configuration_table() -> str:
    rows = []
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append((f"`{s.name}`", default, s.describe_range() or "", s.doc))
    return _table(("variable", "default", "range", "meaning"), rows)


def states_table() -> str:
    missing = set(JobState) - set(STATE_DOCS)
    if missing:
        raise SystemExit(f"kasp docgen: STATE_DOCS has no entry for {sorted(missing)}")
    rows = [(f"`{s.value}`" + (" (initial)" if s is INITIAL_STATE else ""), STATE_DOCS[s]) for s in JobState]
    return _table(("state", "meaning"), rows)


def event_catalogue() -> str:
    missing = set(EventType) - set(EVENT_DOCS)
    if missing:
        raise SystemExit(f"kasp docgen: EVENT_DOCS has no entry for {sorted(missing)}")
    moves = {trigger: f"`{source.value}` → `{dest.value}`" for trigger, source, dest in TRANSITIONS}
    moves[EventType.ENQUEUED] = f"\N{EN DASH} → `{INITIAL_STATE.value}`"
    rows = [(f"`{t.value}`", moves[t], EVENT_DOCS[t][0], _keys(EVENT_DOCS[t][1])) for t in EventType]
    return _table(("event type", "from → to", "when", "`data` keys"), rows)


def _statuses(operation: dict[str, Any]) -> str:
    return ", ".join(sorted(operation["responses"]))


def api_table(doc: dict[str, Any]) -> str:
    rows = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            rows.append((f"`{method.upper()}`", f"`{path}`", operation["summary"], _statuses(operation)))
    return _table(("method", "path", "what", "statuses"), rows)


def error_section(doc: dict[str, Any]) -> str:
    error = doc["components"]["schemas"]["Error"]
    rows = [
        (f"`{name}`", prop["type"], prop.get("description", "")) for name, prop in error["properties"].items()
    ]
    return str(error["description"]) + "\n\n" + _table(("field", "type", "meaning"), rows)


def render() -> str:
    doc = document()
    sections = [
        "# kasp documentation",
        "<!-- Generated by `make doc` (service/docgen.py) from the code. Do not edit by hand. -->",
        "## Overview",
        OVERVIEW,
        "## Configuration",
        "Set in the environment. A value that is not a number, or is out of range, stops the "
        "service at start with a message naming the variable; it is never replaced by the default.",
        configuration_table(),
        "## Job states",
        states_table(),
        "## State diagram",
        "Drawn from `domain.states.MACHINE_CONFIG` by `transitions`. "
        "The initial state has a double border.\n\n"
        f"![Job state diagram: {DIAGRAM_TITLE}]({SVG_NAME})",
        "The same machine as a Mermaid `stateDiagram-v2` (GitHub renders it):",
        "```mermaid\n" + state_diagram_mermaid() + "\n```",
        "## Event catalogue",
        "Every state change is one event in the log. Forbidden moves are refused by the "
        "machine and write nothing. The event JSON is the `Event` schema of the API.",
        event_catalogue(),
        "## HTTP API",
        f"OpenAPI {doc['openapi']} document: [`/openapi.json`](/openapi.json); try it in "
        "[Swagger UI](/swagger/). Every JSON route and its schemas are described there.",
        api_table(doc),
        "### Errors",
        error_section(doc),
        "## How this documentation is built",
        BUILD_NOTES.format(swagger_ui=Path(str(swagger_ui_path)).name, openapi=doc["openapi"]),
    ]
    return "\n\n".join(sections) + "\n"


def write(markdown_path: Path) -> None:
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(render(), encoding="utf-8")
    (markdown_path.parent / SVG_NAME).write_bytes(state_diagram_svg())


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m service.docgen docs/DOCUMENTATION.md", file=sys.stderr)
        return 2
    target = Path(argv[0])
    write(target)
    print(f"wrote {target} and {target.parent / SVG_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""A small Server-Sent Events reader for tests: parses a stream into messages, in a thread."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Message:
    event: str  #: "message" when the server named none; "comment" for `: ...` lines
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def parse(lines: Any) -> Any:
    """Yield a Message per blank-line-terminated block (comments as their own messages)."""
    event, data, msg_id = None, [], None
    for line in lines:
        if line == "":
            if event is not None or data:
                yield Message(event or "message", "\n".join(data), msg_id)
            event, data, msg_id = None, [], None
        elif line.startswith(":"):
            yield Message("comment", line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                msg_id = value


@dataclass
class Subscriber:
    """Reads /events/stream in a background thread until `stop_when(messages)` or the stream ends."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    stop_when: Any = None
    #: cheaper alternative to stop_when for many subscribers: read raw bytes until the
    #: message with this id arrived, and parse only then
    until_id: int | None = None
    messages: list[Message] = field(default_factory=list)
    status: int | None = None
    ended: bool = False  #: the server ended the stream
    error: BaseException | None = None
    opened: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Subscriber:
        threading.Thread(target=self._run, name="sse-subscriber", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=30) as response:
                self.status = response.status_code
                if response.status_code != 200:
                    response.read()
                    self.messages.append(Message("error", response.text))
                    return
                if self.until_id is not None:
                    self._read_raw(response, f"id: {self.until_id}\n".encode())
                    return
                for message in parse(response.iter_lines()):
                    self.messages.append(message)
                    self.opened.set()
                    if self.stop_when is not None and self.stop_when(self.messages):
                        return
                self.ended = True
        except BaseException as exc:  # reported by the test through .error
            self.error = exc
        finally:
            self.opened.set()
            self.done.set()

    def _read_raw(self, response: httpx.Response, marker: bytes) -> None:
        buffer = bytearray()
        for chunk in response.iter_bytes():
            start = max(0, len(buffer) - len(marker))
            buffer += chunk
            self.opened.set()
            if buffer.find(marker, start) != -1:
                break
        else:
            self.ended = True
        self.messages.extend(parse(buffer.decode().split("\n")))

    def events(self) -> list[Message]:
        return [m for m in self.messages if m.id is not None]

    def seqs(self) -> list[int]:
        return [int(m.id) for m in self.events() if m.id is not None]

"""Configuration from the environment: one table drives parsing, errors and the docs.

A bad value stops the service at start with a message naming the variable; it
is never silently replaced by the default (SPEC.md, Configuration).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from service.connections import FD_RESERVE


class ConfigError(ValueError):
    """A setting's value is malformed or out of range; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str, Setting], Any]
    doc: str
    lo: float | None = None
    hi: float | None = None

    @property
    def field(self) -> str:
        return self.name.lower()

    def describe_range(self) -> str:
        if self.lo is None:
            return ""
        return f"{_num(self.lo)}..{_num(self.hi)}"


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")


def _in_range(value: float, raw: str, s: Setting, kind: str) -> None:
    if (s.lo is not None and value < s.lo) or (s.hi is not None and value > s.hi):
        raise ConfigError(f"{s.name}={raw!r}: out of range (expected {kind} {s.describe_range()})")


def parse_int(raw: str, s: Setting) -> int:
    text = raw.strip()
    if not _INT.fullmatch(text):
        raise ConfigError(f"{s.name}={raw!r}: not an integer (expected {s.describe_range()})")
    value = int(text)
    _in_range(value, raw, s, "an integer")
    return value


def parse_seconds(raw: str, s: Setting) -> float:
    text = raw.strip()
    if not _FLOAT.fullmatch(text):
        raise ConfigError(f"{s.name}={raw!r}: not a number of seconds (expected {s.describe_range()})")
    value = float(text)
    _in_range(value, raw, s, "seconds")
    return value


def parse_text(raw: str, s: Setting) -> str:
    text = raw.strip()
    if not text:
        raise ConfigError(f"{s.name} is set but empty")
    return text


def parse_bool(raw: str, s: Setting) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{s.name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_log_level(raw: str, s: Setting) -> str:
    text = raw.strip().upper()
    if text not in LOG_LEVELS:
        raise ConfigError(f"{s.name}={raw!r}: expected one of {', '.join(LOG_LEVELS)}")
    return text


STORE_SCHEMES = ("memory", "sqlite", "postgresql", "postgres")
StoreKind = Literal["memory", "sqlite", "postgres"]


def store_kind(url: str) -> StoreKind:
    """Which adapter a (validated) STORE URL selects: the one place its scheme is read."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        return "memory"
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    raise ConfigError(f"STORE={url!r}: unknown store (expected one of: {', '.join(STORE_SCHEMES)})")


def parse_store(raw: str, s: Setting) -> str:
    text = raw.strip()
    kind = store_kind(text)
    if kind == "sqlite" and (not text.lower().startswith("sqlite:///") or len(text) <= len("sqlite:///")):
        raise ConfigError(f"{s.name}={raw!r}: expected sqlite:///path/kasp.db (three slashes, then a path)")
    if kind != "memory" and "://" not in text:
        raise ConfigError(f"{s.name}={raw!r}: expected a URL like {text.split(':', 1)[0]}://...")
    return text


_DOTTED = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def parse_processor(raw: str, s: Setting) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if not _DOTTED.fullmatch(text):
        raise ConfigError(f"{s.name}={raw!r}: expected a dotted path like 'package.module:function'")
    return text


def parse_secret(raw: str, s: Setting) -> str:
    """A token: empty means "not set"; never echoed in an error message."""
    text = raw.strip()
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ConfigError(f"{s.name} must be printable text without spaces")
    return text


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


def parse_origins(raw: str, s: Setting) -> tuple[str, ...]:
    """Comma-separated origins (`scheme://host[:port]`), compared lower-case, no trailing slash."""
    origins = []
    for part in raw.split(","):
        text = part.strip().rstrip("/").lower()
        if not text:
            continue
        if not _ORIGIN.fullmatch(text):
            raise ConfigError(f"{s.name}: {part.strip()!r} is not an origin like https://app.example.com")
        origins.append(text)
    return tuple(origins)


SETTINGS: tuple[Setting, ...] = (
    Setting("WORKERS", "4", parse_int, "worker tasks in the pool", 1, 10_000),
    Setting("QUEUE_SIZE", "64", parse_int, "jobs admitted but not yet started", 1, 10_000_000),
    Setting("ERROR_RATE", "20", parse_int, "percent of simulated attempts that fail", 0, 100),
    Setting("HOST", "0.0.0.0", parse_text, "listen address"),
    Setting("PORT", "8080", parse_int, "listen port", 1, 65_535),
    Setting("WORK_MIN_MS", "100", parse_int, "shortest simulated attempt (ms)", 0, 3_600_000),
    Setting("WORK_MAX_MS", "500", parse_int, "longest simulated attempt (ms)", 0, 3_600_000),
    Setting(
        "PROCESSOR",
        "",
        parse_processor,
        "`module:name` of the async callable that runs an attempt; empty = the simulated processor",
    ),
    Setting(
        "BACKOFF_BASE_MS", "100", parse_int, "retry delay envelope before the first retry (ms)", 0, 3_600_000
    ),
    Setting("BACKOFF_MAX_MS", "10000", parse_int, "largest retry delay envelope (ms)", 0, 86_400_000),
    Setting("MAX_BODY_BYTES", "1048576", parse_int, "larger request bodies get 413", 1, 104_857_600),
    Setting(
        "SHUTDOWN_TIMEOUT",
        "30",
        parse_seconds,
        "seconds to wait for running attempts on SIGTERM/SIGINT before interrupting them",
        0,
        3600,
    ),
    Setting(
        "STORE",
        "memory",
        parse_store,
        "where the event log lives: `memory`, `sqlite:///path/kasp.db` or `postgresql://user@host/db`",
    ),
    Setting(
        "LEASE_TIMEOUT",
        "10",
        parse_seconds,
        "PostgreSQL store: seconds a running attempt stays owned by its instance without a renewal; "
        "after that another instance records it `interrupted` and the job runs again",
        1,
        3600,
    ),
    Setting(
        "RETAIN_FINISHED",
        "100000",
        parse_int,
        "finished jobs kept (with their events) before the oldest are evicted",
        0,
        1_000_000_000,
    ),
    Setting(
        "ATTEMPT_TIMEOUT_MS",
        "300000",
        parse_int,
        "an attempt running longer is cut off and counts as failed (reason `timeout`); "
        "0 = no limit; a job's own `timeout_ms` overrides it",
        0,
        86_400_000,
    ),
    Setting("LOG_LEVEL", "INFO", parse_log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    Setting("ACCESS_LOG", "0", parse_bool, "log every HTTP request (off by default: it costs throughput)"),
    Setting(
        "API_TOKEN",
        "",
        parse_secret,
        "when set, the acting endpoints and dashboard actions need `Authorization: Bearer <API_TOKEN>`",
    ),
    Setting(
        "READ_TOKEN",
        "",
        parse_secret,
        "when set, the reading endpoints and the dashboard need this token or API_TOKEN",
    ),
    Setting(
        "ALLOWED_ORIGINS",
        "",
        parse_origins,
        "comma-separated origins whose browser pages may call the acting endpoints (others get 403)",
    ),
    Setting(
        "INSPECTOR",
        "0",
        parse_bool,
        "1 starts Sanic's Inspector on localhost (manager mode only) with kasp's `sanic inspect` commands",
    ),
    Setting(
        "INSPECTOR_PORT", "6457", parse_int, "the Inspector's port on localhost (Sanic's default)", 1, 65_535
    ),
    Setting(
        "REQUEST_DEADLINE",
        "10",
        parse_seconds,
        "seconds a client gets to send a whole request, head and body, from its first byte (from the "
        "connection's opening for the first request), however steadily it trickles; then 408 and close "
        "(checked once a second: up to 1 s later)",
        0.1,
        3600,
    ),
    Setting(
        "MAX_CONNECTIONS",
        "4096",
        parse_int,
        f"client connections open at once (kept {FD_RESERVE} under the file-descriptor limit); at the "
        "cap a new connection closes the one waiting longest for its request head, or gets 503 if all "
        "are busy",
        1,
        1_000_000,
    ),
    Setting(
        "STREAM_HEARTBEAT",
        "15",
        parse_seconds,
        "seconds of silence before /events/stream sends a heartbeat comment (Sanic cuts streams idle 60 s)",
        0.01,
        50,
    ),
    Setting(
        "STREAM_SEND_TIMEOUT",
        "10",
        parse_seconds,
        "seconds an /events/stream subscriber may leave data unread before it is dropped",
        0.01,
        50,
    ),
    Setting(
        "STREAM_MAX_AGE",
        "0",
        parse_seconds,
        "seconds after which /events/stream ends with `event: end` (an EventSource reconnects and "
        "resumes with Last-Event-ID; a bound for proxies and tests); 0 = never",
        0,
        86_400,
    ),
)


@dataclass(frozen=True, slots=True)
class Config:
    workers: int = 4
    queue_size: int = 64
    error_rate: int = 20
    host: str = "0.0.0.0"
    port: int = 8080
    work_min_ms: int = 100
    work_max_ms: int = 500
    processor: str | None = None
    backoff_base_ms: int = 100
    backoff_max_ms: int = 10_000
    max_body_bytes: int = 1_048_576
    shutdown_timeout: float = 30.0
    store: str = "memory"
    lease_timeout: float = 10.0
    retain_finished: int = 100_000
    attempt_timeout_ms: int = 300_000
    log_level: str = "INFO"
    access_log: bool = False
    #: tokens stay out of repr(), so a logged Config never shows them
    api_token: str = field(default="", repr=False)
    read_token: str = field(default="", repr=False)
    allowed_origins: tuple[str, ...] = ()
    inspector: bool = False
    inspector_port: int = 6457
    request_deadline: float = 10.0
    max_connections: int = 4096
    stream_heartbeat: float = 15.0
    stream_send_timeout: float = 10.0
    stream_max_age: float = 0.0

    @property
    def store_kind(self) -> StoreKind:
        return store_kind(self.store)


def load(environ: Mapping[str, str]) -> Config:
    """Parse every setting from `environ` (any mapping, so tests pass a dict)."""
    values = {s.field: s.parse(environ.get(s.name, s.default), s) for s in SETTINGS}
    if values["work_min_ms"] > values["work_max_ms"]:
        raise ConfigError(
            f"WORK_MIN_MS={values['work_min_ms']} is larger than WORK_MAX_MS={values['work_max_ms']}"
        )
    return Config(**values)

"""Named SQL queries: each driver keeps its statements in one file, service/store/sql/<driver>.sql.

A query starts with a `-- name: <name>` line and a `-- <one-line description>`
line; its text runs to the next `-- name:`. `:` never starts a parameter here:
the text is the driver's own SQL (`?` for sqlite3, `$1` for asyncpg).
A tiny loader, not aiosql: it reads the file once at import, and a call then goes
straight to the driver with no wrapper on the hot path (aiosql wraps every call).
"""

from __future__ import annotations

import re
from pathlib import Path

_SQL_DIR = Path(__file__).with_name("sql")
_HEADER = re.compile(r"^-- name: (\w+)\n-- (.+)\n", re.MULTILINE)


class Queries:
    """The statements of one driver's file, by name: `queries.claim_ready`, or `queries["claim_ready"]`."""

    def __init__(self, driver: str) -> None:
        text = (_SQL_DIR / f"{driver}.sql").read_text()
        headers = list(_HEADER.finditer(text))
        if not headers:
            raise ValueError(f"{driver}.sql holds no `-- name:` query")
        self._sql: dict[str, str] = {}
        self.descriptions: dict[str, str] = {}
        for header, following in zip(headers, [*headers[1:], None], strict=True):
            end = following.start() if following is not None else len(text)
            name = header.group(1)
            if name in self._sql:
                raise ValueError(f"{driver}.sql names {name!r} twice")
            self._sql[name] = text[header.end() : end].strip().rstrip(";")
            self.descriptions[name] = header.group(2).strip()

    def __getattr__(self, name: str) -> str:
        try:
            return self._sql[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None

    def __getitem__(self, name: str) -> str:
        return self._sql[name]

    def names(self) -> list[str]:
        return list(self._sql)

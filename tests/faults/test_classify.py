"""The one classification of driver errors, on errors the real drivers raise.

An outage becomes StoreUnavailable (raised from the driver's error) and marks the
store down until a write succeeds; a bug stays itself. SQLite and PostgreSQL only:
the memory store raises no driver errors.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from service.store.faults import StoreHealth, StoreUnavailable, is_unavailable
from tests.support.service_process import free_port


def _sqlite_error(db: Path, sql: str, *, read_only: bool = False) -> sqlite3.Error:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro" if read_only else db, uri=read_only)
    except sqlite3.Error as exc:
        return exc
    try:
        conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{sql!r} did not fail")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    return path


def test_sqlite_outages_are_unavailable(db: Path, tmp_path: Path) -> None:
    assert is_unavailable(_sqlite_error(db, "INSERT INTO t VALUES (2)", read_only=True))  # SQLITE_READONLY
    assert is_unavailable(_sqlite_error(tmp_path / "no" / "such" / "dir.db", "SELECT 1"))  # SQLITE_CANTOPEN


def test_sqlite_bugs_stay_themselves(db: Path) -> None:
    assert not is_unavailable(_sqlite_error(db, "SELEC 1"))  # bad SQL
    assert not is_unavailable(_sqlite_error(db, "INSERT INTO t VALUES (1)"))  # a constraint


def test_postgres_outages_are_unavailable_and_bugs_are_not(pg_dsn: str) -> None:
    async def errors() -> tuple[BaseException, BaseException, BaseException]:
        try:
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
        except Exception as exc:
            refused: BaseException = exc
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("SELEC 1")
        except Exception as exc:
            bad_sql: BaseException = exc
        await conn.close()
        try:
            await conn.fetchval("SELECT 1")
        except Exception as exc:
            closed: BaseException = exc
        return refused, bad_sql, closed

    refused, bad_sql, closed = asyncio.run(errors())
    assert is_unavailable(refused), refused  # OSError: connection refused
    assert is_unavailable(closed), closed  # InterfaceError: connection is closed
    assert not is_unavailable(bad_sql), bad_sql  # PostgresSyntaxError


@pytest.fixture
def store_log() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("kasp.store")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_health_goes_down_once_per_outage_and_up_on_success(
    db: Path, store_log: list[logging.LogRecord]
) -> None:
    health = StoreHealth("SQLite")
    seen: list[bool] = []
    health.add_listener(seen.append)
    cause = _sqlite_error(db, "INSERT INTO t VALUES (2)", read_only=True)
    for _ in range(3):
        error = health.failed(cause)
        assert isinstance(error, StoreUnavailable) and error.__cause__ is cause
    assert (health.available, health.last_error) == (False, "attempt to write a readonly database")
    bug = _sqlite_error(db, "SELEC 1")
    assert health.failed(bug) is bug
    health.succeeded()
    health.succeeded()
    assert health.available and seen == [False, True]
    assert [(r.levelname, r.action) for r in store_log] == [  # type: ignore[attr-defined]
        ("WARNING", "store_unavailable"),
        ("INFO", "store_available"),
    ]
    health.failed(cause)  # a flap right after a recovery: counted, not logged
    health.succeeded()
    assert len(store_log) == 2 and seen == [False, True, False, True]

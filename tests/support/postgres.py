"""PostgreSQL admin for tests and benchmarks: a fresh database per run, a clean schema per test."""

from __future__ import annotations

import asyncpg


async def create_database(admin_dsn: str, name: str) -> None:
    """CREATE DATABASE `name` (tests and benchmarks use a fresh one per run)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """DROP DATABASE `name`, disconnecting whoever still uses it."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def drop_schema(dsn: str) -> None:
    """Remove kasp's tables, function and schema version from a database (a clean slate)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS kasp_events, kasp_jobs, kasp_log, kasp_schema CASCADE; "
            "DROP FUNCTION IF EXISTS kasp_notify() CASCADE"
        )
    finally:
        await conn.close()


def dsn_for(admin_dsn: str, name: str) -> str:
    """The same server's DSN with another database name."""
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{name}"

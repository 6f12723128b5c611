"""Fixtures that break a store for real: a throwaway PostgreSQL cluster, a small mounted disk.

The memory store cannot fail this way (it has no server and no disk), so these tests
run on SQLite or PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg_cluster import ClusterUnavailable, ThrowawayCluster
from tests.support.small_fs import MountRefused, mount_tmpfs, unmount


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    """A PostgreSQL server of this module's own, free to stop and restart."""
    try:
        pg = ThrowawayCluster()
    except ClusterUnavailable as exc:
        pytest.skip(f"no throwaway PostgreSQL cluster: {exc}")
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture
def cluster_dsn(cluster: ThrowawayCluster) -> str:
    """A fresh database on the throwaway cluster."""
    from tests.support.postgres import create_database, dsn_for

    name = f"kasp_faults_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_database(cluster.admin_dsn, name))
    return dsn_for(cluster.admin_dsn, name)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test: quick to fill, and room for SQLite's WAL and file.

    Not smaller: the WAL is checkpointed into the file only once it holds ~4 MB
    (wal_autocheckpoint, 1,000 pages), and the checkpoint needs room in the file for
    the pages it copies. On a 4 MiB disk the WAL alone filled it, the checkpoint could
    never run, and no write succeeded again after the filler was removed (half the runs)."""
    where = tmp_path / "disk"
    try:
        mount_tmpfs(where, "16m")
    except MountRefused as exc:
        pytest.skip(str(exc))
    try:
        yield where
    finally:
        unmount(where)

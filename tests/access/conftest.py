"""Access rules hold on every store: memory, SQLite (a temporary file), PostgreSQL."""

from __future__ import annotations

import os

import pytest

from tests.conftest import STORES, store_url_for


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    return store_url_for(request, tmp_path)

"""The docs, the OpenAPI document and the pages describe the HTTP surface, which no store
changes (tests/api checks the responses themselves on every store): memory only."""

from __future__ import annotations

import pytest


@pytest.fixture
def store_url() -> str:
    return "memory"

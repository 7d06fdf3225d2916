"""The notification tests run on both databases the hub supports: SQLite (the embedded
default) and a real PostgreSQL database created per test (`pg_url`, tests/conftest.py)."""

from __future__ import annotations

import pytest

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite+aiosqlite:///n.db"
    return request.getfixturevalue("pg_url")

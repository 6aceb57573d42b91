"""Fixtures of the projection tests (the servers come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from projections.db import connect


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the live schema (search_path read_model)."""
    conn = await connect(database_url)
    yield conn
    await conn.close()

"""Fixtures of the projection tests (the servers come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS

from events import EventStore
from projections.db import connect


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
async def store(nc: NATS) -> EventStore:
    return await EventStore.open(nc, stream="CLINAI")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the live schema (search_path read_model)."""
    conn = await connect(database_url)
    yield conn
    await conn.close()

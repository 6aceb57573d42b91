"""The queued-jobs cap's count (`services/api/_admission.py`), on a real Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from events import EventStore
from projections import Projector
from projections.db import create_pool
from projections.watermark import ProjectionWatermark
from services.api import _admission
from services.api._admission import JobAdmission
from services.settings import Settings
from tests.projections._support import running, user_created, wait_checkpoint


class _CountedPool:
    """The real pool; counts the statements the admission sends through it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.statements = 0

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.statements += 1
        return await self._pool.fetchrow(query, *args)


async def test_an_owners_concurrent_submissions_make_one_count_when_it_is_stale(
    database_url: str, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(Projector(database_url, store)):  # the read models' tables
        await wait_checkpoint(database_url, await store.append(user_created(), expected=None))
    monkeypatch.setattr(_admission, "_FRESH_S", 0.0)  # every count is stale at once
    pool = await create_pool(database_url)
    try:
        async with await ProjectionWatermark.open(database_url) as watermark:
            counted = _CountedPool(pool)
            admission = JobAdmission(counted, watermark, Settings())  # type: ignore[arg-type]
            await admission.check("usr_a")
            assert counted.statements == 1
            # 32 submissions of the owner at once: one counts again, the others pass on
            # the count it had (well below half the cap).
            await asyncio.gather(*(admission.check("usr_a") for _ in range(32)))
            assert counted.statements == 2
            await admission.check("usr_b")  # another owner has a count of their own
            assert counted.statements == 3
    finally:
        await pool.close()

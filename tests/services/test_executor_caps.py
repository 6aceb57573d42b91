"""An owner's running cap as the executor reads it from the log (`RunningCaps`)."""

from __future__ import annotations

import asyncio
from typing import Any

from events import EventStore
from services.executor._owners import RunningCaps
from tests.projections._support import user_created


class _CountedStore:
    """The real event store; counts the aggregate reads made through it."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.reads = 0

    async def read_aggregate(self, aggregate: str, aggregate_id: str, **kw: Any) -> Any:
        self.reads += 1
        return await self._store.read_aggregate(aggregate, aggregate_id, **kw)


async def test_an_owners_concurrent_jobs_read_the_cap_once_when_it_is_stale(
    store: EventStore,
) -> None:
    user = user_created()
    await store.append(user, expected=None)
    counted = _CountedStore(store)
    now = [0.0]
    caps = RunningCaps(counted, 3, ttl_s=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await caps.cap(user.aggregate_id) == 3  # no limit of their own: the default
    assert counted.reads == 1
    await asyncio.gather(*(caps.cap(user.aggregate_id) for _ in range(8)))
    assert counted.reads == 1  # still fresh
    now[0] = 10.0  # stale: one job reads again, the owner's others go on the cap read before
    assert await asyncio.gather(*(caps.cap(user.aggregate_id) for _ in range(8))) == [3] * 8
    assert counted.reads == 2
    assert await caps.cap(user.aggregate_id) == 3
    assert counted.reads == 2  # fresh again

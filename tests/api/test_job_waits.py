"""JobWaits: many long polls share one lookup per projection advance."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, cast

import pytest

from services.api._job_waits import JobWaits
from tests._infra import wait_until


class FakeWatermark:
    """Commit notices that never say which jobs changed, unless `moved` is set."""

    def __init__(self) -> None:
        self.checkpoint = 0
        self.moved: dict[str, bool] | None = None
        self._advanced = asyncio.Event()

    def job_moved(
        self, job_id: str, after: int, seen_seq: int, *, ended: bool = False
    ) -> bool | None:
        return None if self.moved is None else self.moved.get(job_id, False)

    def advance(self, seq: int) -> None:
        self.checkpoint = seq
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def wait_job(self, job_id: str, after: int, timeout: float) -> int:
        """Like the real one: wakes on a commit past `after` that may have moved the job."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.checkpoint <= after or self.job_moved(job_id, after, 0) is False:
            try:
                await asyncio.wait_for(self._advanced.wait(), deadline - loop.time())
            except TimeoutError:
                break
        return self.checkpoint


class Rows:
    def __init__(self, seqs: dict[str, int]) -> None:
        self.seqs = seqs
        self.lookups: list[set[str]] = []

    async def __call__(self, ids: Collection[str]) -> dict[str, int]:
        self.lookups.append(set(ids))
        await asyncio.sleep(0)
        return {i: self.seqs[i] for i in ids if i in self.seqs}


def _waits(rows: Rows, mark: FakeWatermark) -> JobWaits:
    return JobWaits(cast(Any, None), cast(Any, mark), lookup=rows)


async def _waiting_poll(
    waits: JobWaits, job_id: str, last_seq: int, checkpoint: int, timeout: float
) -> asyncio.Task[None]:
    """A long poll of `job_id`, once it waits (the only poll)."""
    poll = asyncio.create_task(waits.wait_moved(job_id, last_seq, checkpoint, timeout))
    await wait_until(lambda: waits.waiting == 1, what="the poll waiting", every_s=0)
    return poll


async def test_one_lookup_per_advance_wakes_only_the_moved_job() -> None:
    mark = FakeWatermark()
    rows = Rows({f"job{i}": 1 for i in range(20)})
    waits = _waits(rows, mark)
    polls = {
        f"job{i}": asyncio.create_task(waits.wait_moved(f"job{i}", 1, 0, 5.0)) for i in range(20)
    }
    await wait_until(lambda: waits.waiting == 20, what="20 polls waiting", every_s=0)
    rows.seqs["job3"] = 2
    mark.advance(2)
    await asyncio.wait_for(polls["job3"], 1.0)
    await wait_until(lambda: waits.waiting == 19, what="only job3 done", every_s=0)
    assert [job for job, task in polls.items() if task.done()] == ["job3"]
    assert len(rows.lookups) == 1 and len(rows.lookups[0]) == 20

    rows.seqs["job7"] = 3
    mark.advance(3)
    await asyncio.wait_for(polls["job7"], 1.0)
    assert waits.queries == 2
    for task in polls.values():
        task.cancel()
    await asyncio.gather(*polls.values(), return_exceptions=True)


async def test_times_out_when_nothing_moves() -> None:
    mark = FakeWatermark()
    rows = Rows({"job": 5})
    waits = _waits(rows, mark)
    poll = await _waiting_poll(waits, "job", 5, 0, 0.2)
    mark.advance(1)  # another job's event
    await asyncio.wait_for(poll, 1.0)
    assert rows.lookups == [{"job"}]


async def test_a_vanished_row_counts_as_moved() -> None:
    mark = FakeWatermark()
    rows = Rows({"job": 5})
    waits = _waits(rows, mark)
    poll = await _waiting_poll(waits, "job", 5, 0, 5.0)
    del rows.seqs["job"]
    mark.advance(1)
    await asyncio.wait_for(poll, 1.0)


async def test_a_failed_lookup_is_not_reused() -> None:
    mark = FakeWatermark()
    calls = 0

    async def flaky(ids: Collection[str]) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("connection lost")
        return {"job": 2}

    waits = JobWaits(cast(Any, None), cast(Any, mark), lookup=flaky)
    poll = await _waiting_poll(waits, "job", 1, 0, 5.0)
    mark.advance(1)
    with pytest.raises(OSError):
        await asyncio.wait_for(poll, 1.0)
    poll = await _waiting_poll(waits, "job", 1, 1, 5.0)
    mark.advance(2)
    await asyncio.wait_for(poll, 1.0)
    assert calls == 2


async def test_commit_notices_wake_polls_without_a_query() -> None:
    mark = FakeWatermark()
    mark.moved = {}
    rows = Rows({"a": 1, "b": 1})
    waits = _waits(rows, mark)
    polls = {job: asyncio.create_task(waits.wait_moved(job, 1, 0, 5.0)) for job in "ab"}
    await wait_until(lambda: waits.waiting == 2, what="2 polls waiting", every_s=0)
    mark.moved = {"b": True}
    mark.advance(2)
    await asyncio.wait_for(polls["b"], 1.0)
    assert not polls["a"].done()
    assert rows.lookups == [] and waits.queries == 0
    polls["a"].cancel()
    await asyncio.gather(polls["a"], return_exceptions=True)

"""A warm worker pool, generic over the worker type (process or container).

Workers are keyed (one key per artifact) and belong to one owner (whose jobs they
serve): a worker keeps module globals, threads and files from job to job, so it never
serves two owners' jobs. At most `max_per_key` jobs run at once per key, whatever their
owners, and at most `max_total` workers live at once; when full, an idle worker of
another key or owner is evicted, or the caller waits. Idle workers are stopped after
`idle_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from events import ClinaiError

__all__ = ["AcquireCanceledError", "PoolClosedError", "PooledWorker", "WorkerPool"]


class PooledWorker(Protocol):
    @property
    def alive(self) -> bool: ...

    async def kill(self) -> None: ...


W = TypeVar("W", bound=PooledWorker)


class PoolClosedError(ClinaiError):
    """The pool was closed."""


class AcquireCanceledError(ClinaiError):
    """The caller's cancel event was set before a worker was ready for it."""


class WorkerPool(Generic[W]):
    def __init__(
        self,
        *,
        max_per_key: int,
        max_total: int,
        idle_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_key < 1:
            raise ValueError(f"max_per_key must be >= 1, got {max_per_key}")
        if max_total < 1:
            raise ValueError(f"max_total must be >= 1, got {max_total}")
        self._max_per_key = max_per_key
        self._max_total = max_total
        self._idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._idle: dict[tuple[str, str], list[tuple[W, float]]] = {}  # (key, owner)
        self._live: dict[W, str] = {}  # each live worker's key
        self._total = 0  # live workers + workers being started
        self._cond: asyncio.Condition | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._cleanups: set[asyncio.Future[object]] = set()

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        if self._reaper is None and self._idle_timeout_s > 0:
            self._reaper = asyncio.create_task(self._reap_idle())
        return self._cond

    @property
    def live(self) -> int:
        """Workers alive now, idle or busy (one that died idle is not counted, even
        before the next acquire cleans it up)."""
        return sum(1 for worker in self._live if worker.alive)

    def warm_workers(self) -> dict[str, tuple[int, int]]:
        """Live workers per key: (idle, busy). Workers being started are not counted."""
        idle: dict[str, int] = {}
        for (key, _), workers in self._idle.items():
            idle[key] = idle.get(key, 0) + sum(1 for worker, _ in workers if worker.alive)
        live: dict[str, int] = {}
        for worker, key in self._live.items():
            if worker.alive:
                live[key] = live.get(key, 0) + 1
        return {key: (idle.get(key, 0), count - idle.get(key, 0)) for key, count in live.items()}

    async def acquire(
        self,
        key: str,
        start: Callable[[], Awaitable[W]],
        *,
        owner: str,
        cancel: asyncio.Event | None = None,
    ) -> tuple[W, bool]:
        """A worker for `key` that has served `owner`'s jobs only (warm if one is idle),
        and whether it was just started. Hand it back with `release`.

        Setting `cancel` stops the wait for a slot or the worker's start (which kills
        the worker being started): AcquireCanceledError is raised at once."""
        if cancel is None or self._warm_now(key, owner):  # nothing to wait for
            return await self._acquire(key, start, owner)
        if cancel.is_set():
            raise AcquireCanceledError("canceled before a worker was ready")
        task = asyncio.ensure_future(self._acquire(key, start, owner))
        stop = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # our caller is stopped: so is the acquire
            self._abandon(task, key, owner)
            raise
        finally:
            stop.cancel()
        if cancel.is_set():
            self._abandon(task, key, owner)
            raise AcquireCanceledError("canceled before a worker was ready")
        return task.result()

    def _warm_now(self, key: str, owner: str) -> bool:
        """Whether `_acquire` would hand out an idle worker without waiting at all."""
        slots = self._slots.get(key)
        idle = self._idle.get((key, owner))
        if slots is None or slots.locked() or self._cond is None or self._cond.locked():
            return False
        return idle is not None and bool(idle) and idle[-1][0].alive

    def _abandon(self, task: asyncio.Future[tuple[W, bool]], key: str, owner: str) -> None:
        """Stop an acquire nobody waits for any more, without waiting for it: a worker
        being started is killed in the background (`close` waits for that), and a
        worker it got anyway goes back idle."""

        def settle(done: asyncio.Future[tuple[W, bool]]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            worker, _ = done.result()
            self._background(self.release(key, worker, owner=owner, reuse=True))

        task.cancel()
        task.add_done_callback(settle)
        self._background(task)

    def _background(self, work: Awaitable[object]) -> None:
        future = asyncio.ensure_future(work)
        self._cleanups.add(future)
        future.add_done_callback(self._cleanups.discard)

    async def _acquire(
        self, key: str, start: Callable[[], Awaitable[W]], owner: str
    ) -> tuple[W, bool]:
        if self._closed:
            raise PoolClosedError("the worker pool is closed")
        cond = self._condition()
        slots = self._slots.setdefault(key, asyncio.Semaphore(self._max_per_key))
        await slots.acquire()
        try:
            victim: W | None = None
            async with cond:
                while True:
                    if self._closed:
                        raise PoolClosedError("the worker pool is closed")
                    warm = self._pop_idle((key, owner))
                    if warm is not None:
                        return warm, False
                    if self._total < self._max_total:
                        break
                    victim = self._pop_oldest_idle()
                    if victim is not None:
                        break
                    await cond.wait()
                self._total += 1
            try:
                if victim is not None:  # shielded: a canceled acquire still stops it
                    await asyncio.shield(victim.kill())
                worker = await start()
            except BaseException:
                async with cond:
                    self._total -= 1
                    cond.notify_all()
                raise
            self._live[worker] = key
            return worker, True
        except BaseException:
            slots.release()
            raise

    async def release(self, key: str, worker: W, *, owner: str, reuse: bool) -> None:
        """Give a worker back (with the `key` and `owner` it was acquired for): idle for
        reuse by the same owner's jobs, or stopped."""
        cond = self._condition()
        keep = reuse and worker.alive and not self._closed
        async with cond:
            if keep:
                self._idle.setdefault((key, owner), []).append((worker, self._clock()))
            else:
                self._forget(worker)
            cond.notify_all()
        self._slots[key].release()
        if not keep:
            await worker.kill()

    def _forget(self, worker: W) -> None:
        if self._live.pop(worker, None) is not None:
            self._total -= 1

    def _pop_idle(self, slot: tuple[str, str]) -> W | None:
        idle = self._idle.get(slot)
        if idle is None:
            return None
        if not idle:  # many owners come and go: keep no empty lists
            del self._idle[slot]
            return None
        while idle:
            worker, _ = idle.pop()
            if worker.alive:
                return worker
            self._forget(worker)  # died while idle: clean it up in the background
            self._background(worker.kill())
        return None

    def _pop_oldest_idle(self) -> W | None:
        oldest: tuple[tuple[str, str], int, float] | None = None
        for key, idle in self._idle.items():
            for index, (_, since) in enumerate(idle):
                if oldest is None or since < oldest[2]:
                    oldest = (key, index, since)
        if oldest is None:
            return None
        worker, _ = self._idle[oldest[0]].pop(oldest[1])
        self._forget(worker)
        return worker

    async def _reap_idle(self) -> None:
        interval = max(0.05, min(self._idle_timeout_s / 4, 5.0))
        while not self._closed:
            await asyncio.sleep(interval)
            cond = self._condition()
            expired: list[W] = []
            async with cond:
                now = self._clock()
                for slot, idle in list(self._idle.items()):
                    keep = [(w, t) for w, t in idle if w.alive and now - t < self._idle_timeout_s]
                    expired.extend(w for w, t in idle if (w, t) not in keep)
                    if keep:
                        self._idle[slot] = keep
                    else:
                        del self._idle[slot]
                for worker in expired:
                    self._forget(worker)
                if expired:
                    cond.notify_all()
            for worker in expired:
                await worker.kill()

    async def close(self) -> None:
        """Stop every worker, idle or busy."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        workers = list(self._live)
        self._idle.clear()
        self._live.clear()
        self._total = 0
        await asyncio.gather(*(w.kill() for w in workers), *self._cleanups, return_exceptions=True)
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()

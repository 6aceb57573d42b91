"""The executor's worker slots, shared fairly between the owners of waiting jobs.

The executor holds a window of requested jobs ahead of its slots (their messages stay
unacknowledged, kept alive by `in_progress` heartbeats, so a crash still redelivers
them). Each job waits here for a slot. When a slot frees, it goes to the owner with the
fewest jobs running, ties taken in turn: an owner with hundreds of jobs waiting delays
another owner's single job by at most the time until the next slot frees, and never
holds more than their cap of slots (`max_running_jobs`, 0: none) while others wait or
not. One owner alone gets a free slot at once, with no task switch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict

from services.turns import wait_turn

__all__ = ["FairSlots"]


_UNORDERED = 1 << 62  # after every stream sequence
_Waiter = tuple[int, int, "asyncio.Future[None]"]


class FairSlots:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._free = slots
        self._running: dict[str, int] = {}
        self._caps: dict[str, int] = {}
        # Owners with jobs waiting, in turn order (the one served last goes to the end),
        # each with a heap of (submission order, arrival, waiter).
        self._waiting: OrderedDict[str, list[_Waiter]] = OrderedDict()
        self._arrivals = itertools.count()
        self._closed = False

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @property
    def taken(self) -> int:
        """Slots held by running jobs (all owners)."""
        return sum(self._running.values())

    def running(self, owner: str) -> int:
        return self._running.get(owner, 0)

    def close(self) -> None:
        """The executor is stopping: no job starts any more; waiting ones wait until
        they are cancelled (and their messages go back to the server)."""
        self._closed = True

    async def acquire(self, owner: str, cap: int = 0, *, seq: int | None = None) -> None:
        """Wait for a slot for one of `owner`'s jobs; `cap` (0: none) is how many of
        their jobs may run at once; `seq`: the job's place in submission order (its
        stream sequence; None: after those given one, in arrival order). Pair with
        `release(owner)`."""
        self._caps[owner] = cap
        if self._free and not self._waiting and not self._closed and self._under_cap(owner):
            self._take(owner)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        order = seq if seq is not None else _UNORDERED
        heapq.heappush(self._waiting.setdefault(owner, []), (order, next(self._arrivals), waiter))
        self._dispatch()
        await wait_turn(
            waiter,
            hand_on=lambda: self.release(owner),
            forget=lambda: self._forget(owner, waiter),
        )

    def release(self, owner: str) -> None:
        count = self._running.get(owner, 0) - 1
        if count < 0:
            raise RuntimeError(f"release without acquire for owner {owner}")
        if count:
            self._running[owner] = count
        else:
            del self._running[owner]
            if owner not in self._waiting:
                self._caps.pop(owner, None)
        self._free += 1
        self._dispatch()

    def _under_cap(self, owner: str) -> bool:
        cap = self._caps.get(owner, 0)
        return cap <= 0 or self._running.get(owner, 0) < cap

    def _take(self, owner: str) -> None:
        self._free -= 1
        self._running[owner] = self._running.get(owner, 0) + 1

    def _dispatch(self) -> None:
        while self._free and self._waiting and not self._closed:
            owner = self._next_owner()
            if owner is None:
                return  # everyone waiting is at their cap
            queue = self._waiting[owner]
            _, _, waiter = heapq.heappop(queue)
            if queue:
                self._waiting.move_to_end(owner)  # ties go to the others first
            else:
                del self._waiting[owner]
            if waiter.done():  # cancelled while waiting
                continue
            self._take(owner)
            waiter.set_result(None)

    def _next_owner(self) -> str | None:
        best: str | None = None
        fewest = 0
        for owner in self._waiting:
            if not self._under_cap(owner):
                continue
            running = self._running.get(owner, 0)
            if best is None or running < fewest:
                best, fewest = owner, running
                if not running:
                    break
        return best

    def _forget(self, owner: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(owner)
        if queue is None:
            return
        kept = [entry for entry in queue if entry[2] is not waiter]
        if len(kept) == len(queue):
            return
        heapq.heapify(kept)
        queue[:] = kept
        if not queue:
            del self._waiting[owner]
            if owner not in self._running:
                self._caps.pop(owner, None)

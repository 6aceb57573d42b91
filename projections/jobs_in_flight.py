"""Which owners have jobs in flight, as the projector reads the log: so that a batch
ending an owner's only job is held a tenth of the busy interval at most, not all of it.

The hold (`Projector`, `busy_interval_s`) makes a flood of one owner's jobs cheap: their
ends commit together. Without this, another owner's single job that ends during the
flood waits for the same hold, and its long poll with it: the hold is what made that
job's p99 miss the fairness target. An owner with several jobs in flight is submitting
in bulk and its ends keep being batched; one whose only job ends is someone waiting.

Counted from the events the projector reads since it started: after a restart, jobs
requested before its checkpoint are not known and their ends are held as before.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from events import TERMINAL_JOB_EVENTS, JobRequested, StoredEvent

__all__ = ["JobsInFlight"]


class JobsInFlight:
    """`ends_a_lone_job(batch)`: count the batch's requested and ended jobs; True when
    one of its events ends the only job its owner had in flight."""

    def __init__(self) -> None:
        self._owner_of: dict[str, str] = {}  # job id -> owner, while in flight
        self._per_owner: collections.Counter[str] = collections.Counter()

    def ends_a_lone_job(self, batch: Iterable[StoredEvent]) -> bool:
        lone = False
        for stored in batch:
            event = stored.event
            if isinstance(event, JobRequested):
                if event.aggregate_id not in self._owner_of:
                    self._owner_of[event.aggregate_id] = event.owner
                    self._per_owner[event.owner] += 1
            elif isinstance(event, TERMINAL_JOB_EVENTS):
                owner = self._owner_of.pop(event.aggregate_id, None)
                if owner is None:
                    continue  # requested before this projector started, or ended twice
                lone = lone or self._per_owner[owner] == 1
                self._per_owner[owner] -= 1
                if self._per_owner[owner] <= 0:
                    del self._per_owner[owner]
        return lone

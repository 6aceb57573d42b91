"""The queued-jobs cap on `POST /v1/jobs`: an owner with `max_queued_jobs` jobs waiting
to start is answered 429 until some start (or are canceled).

The read models count the owner's queued jobs; the jobs this process appended that
they do not show yet (above the checkpoint of the count's snapshot) are added, so one
owner submitting one job after another never gets past the cap, however fast. Requests
of one owner in flight at once may let that many more through.

The count is a query, so it is not made on every submission: an owner known (within the
last `_FRESH_S`) to be below half their cap, counting what this process sent since, is
let through at once. Other API processes' submissions of that owner and an admin's
change of the cap are therefore seen within `_FRESH_S`, or as the owner nears the cap.
Once the count is older, one submission counts again while the owner's others, in flight
at the same time, are let through on the count they have (one query, not one each: 32
concurrent clients made 32 at once every `_FRESH_S`).
"""

from __future__ import annotations

import time

import asyncpg
import msgspec

from projections.limit_queries import owner_queue
from projections.watermark import ProjectionWatermark
from services.api.problems import ApiError
from services.settings import Settings

__all__ = ["JobAdmission"]

_RETRY_AFTER_S = 5
_FRESH_S = 1.0
_OWNERS_KEPT = 10_000


class _Known(msgspec.Struct):
    at: float  # monotonic time of the count
    queued: int  # then, with what this process had sent and the read models lacked
    cap: int
    sent: int = 0  # jobs this process sent since
    counting: bool = False  # a submission is counting again (the others go on this one)


class JobAdmission:
    def __init__(
        self, pool: asyncpg.Pool, watermark: ProjectionWatermark, settings: Settings
    ) -> None:
        self._pool = pool
        self._watermark = watermark
        self._default = settings.max_queued_jobs_per_owner
        self._unseen: dict[str, list[int]] = {}  # owner -> sequences of jobs sent from here
        self._known: dict[str, _Known] = {}

    async def check(self, owner: str) -> None:
        """Refuse (429) when `owner` has `max_queued_jobs` jobs waiting to start."""
        now = time.monotonic()
        known = self._known.get(owner)
        below_half = known is not None and 2 * (known.queued + known.sent) < known.cap
        if known is not None and below_half and (now - known.at < _FRESH_S or known.counting):
            return
        if known is not None:
            known.counting = True
        try:
            queue = await owner_queue(self._pool, owner)
        finally:
            if known is not None:
                known.counting = False  # replaced below, unless the count failed
        checkpoint = queue.checkpoint
        mine = self._unseen.get(owner)
        if mine is not None:
            mine[:] = [seq for seq in mine if seq > checkpoint]
            if not mine:
                del self._unseen[owner]
        cap = queue.max_queued_jobs if queue.max_queued_jobs is not None else self._default
        queued = queue.queued + len(mine or ())
        if len(self._known) >= _OWNERS_KEPT:
            self._known.clear()
        self._known[owner] = _Known(at=now, queued=queued, cap=cap)
        if queued < cap:
            return
        source = (
            "set for your user by an admin"
            if queue.max_queued_jobs is not None
            else "setting CLINAI_MAX_QUEUED_JOBS_PER_OWNER"
        )
        raise ApiError(
            429,
            "Too many queued jobs",
            f"you have {queued} jobs waiting to start and your limit (max_queued_jobs) "
            f"is {cap}, {source}. Submit more once some have started, or cancel some.",
            headers={"Retry-After": str(_RETRY_AFTER_S)},
            extra={
                "limit": "max_queued_jobs",
                "setting": "CLINAI_MAX_QUEUED_JOBS_PER_OWNER",
                "queued": queued,
                "max_queued_jobs": cap,
            },
        )

    def submitted(self, owner: str, seq: int) -> None:
        """A job of `owner` was appended at `seq`: counted until the read models have it."""
        known = self._known.get(owner)
        if known is not None:
            known.sent += 1
        if seq > self._watermark.checkpoint:
            self._unseen.setdefault(owner, []).append(seq)

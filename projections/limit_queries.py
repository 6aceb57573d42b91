"""The read side of per-user limits: a user's own limits and an owner's queued jobs."""

from __future__ import annotations

from typing import Any

import msgspec

from projections.apply import PROJECTION

__all__ = ["OwnerQueue", "UserLimitsView", "get_user_limits", "owner_queue"]


class UserLimitsView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    max_queued_jobs: int | None  # None: the operator's default
    max_running_jobs: int | None
    last_seq: int


class OwnerQueue(msgspec.Struct, frozen=True, kw_only=True):
    queued: int  # jobs of the owner waiting to start
    max_queued_jobs: int | None  # the user's own limit; None: the default
    checkpoint: int  # the last event the count includes (the same snapshot)


async def owner_queue(db: Any, owner: str) -> OwnerQueue:
    """One round trip: the owner's queued jobs (a partial index holds the jobs not
    started), their own queued-jobs limit, and the checkpoint of that snapshot."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM jobs WHERE owner = $1 AND started_at IS NULL "
        "AND status = 'queued') AS queued, "
        "(SELECT max_queued_jobs FROM users WHERE id = $1) AS max_queued_jobs, "
        "(SELECT last_seq FROM checkpoint WHERE projection = $2) AS checkpoint",
        owner,
        PROJECTION,
    )
    return OwnerQueue(
        queued=int(row["queued"]),
        max_queued_jobs=row["max_queued_jobs"],
        checkpoint=int(row["checkpoint"] or 0),
    )


async def get_user_limits(db: Any, user_id: str) -> UserLimitsView | None:
    row = await db.fetchrow(
        "SELECT id AS user_id, max_queued_jobs, max_running_jobs, last_seq FROM users "
        "WHERE id = $1",
        user_id,
    )
    return None if row is None else UserLimitsView(**row)

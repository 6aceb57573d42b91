"""Per-user job limits: the operator's defaults (settings), overridden per user by an
admin (`UserLimitsSet` on the user aggregate), and the command that sets them.

- `max_queued_jobs`: jobs of one owner waiting to start; over it `POST /v1/jobs` is
  refused with 429 (the API counts them in the read models).
- `max_running_jobs`: jobs of one owner running at once on one executor (0: no cap);
  jobs over it wait, in turn with every other owner's (`services.executor._fair`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec

from events import EventStore, StoredEvent, UserLimitsSet
from services.domain.aggregates import fold_user
from services.domain.context import (
    CommandContext,
    CommandError,
    ForbiddenError,
    NotFoundError,
)
from services.settings import Settings

__all__ = ["UserLimits", "effective_limits", "fold_user_limits", "set_user_limits"]

# A cap an admin may set: above it a number is a typo, not a limit.
MAX_LIMIT = 1_000_000


class UserLimits(msgspec.Struct, frozen=True, kw_only=True):
    """A user's own limits; None: the operator's default."""

    max_queued_jobs: int | None = None
    max_running_jobs: int | None = None


def fold_user_limits(events: Sequence[StoredEvent]) -> UserLimits:
    """The limits an admin set for the user last (none: the defaults)."""
    e = fold_user(events).limits_set
    if e is None:
        return UserLimits()
    return UserLimits(max_queued_jobs=e.max_queued_jobs, max_running_jobs=e.max_running_jobs)


def effective_limits(settings: Settings, own: UserLimits) -> UserLimits:
    """The limits in force: the user's own where set, else the settings'."""
    return UserLimits(
        max_queued_jobs=(
            own.max_queued_jobs
            if own.max_queued_jobs is not None
            else settings.max_queued_jobs_per_owner
        ),
        max_running_jobs=(
            own.max_running_jobs
            if own.max_running_jobs is not None
            else settings.max_running_jobs_per_owner
        ),
    )


async def set_user_limits(
    store: EventStore,
    ctx: CommandContext,
    user_id: str,
    limits: UserLimits,
    *,
    clock: Callable[[], datetime] | None = None,
) -> int:
    """Record `limits` as the user's own (admins only); returns the event's sequence."""
    if not ctx.is_admin:
        raise ForbiddenError(
            "only an admin can set a user's limits", hint="ask an admin to raise them"
        )
    for name, value in msgspec.structs.asdict(limits).items():
        if value is not None and not 0 <= value <= MAX_LIMIT:
            raise CommandError(
                f"{name} must be from 0 to {MAX_LIMIT}", hint="or null for the default"
            )
    history = await store.read_aggregate("user", user_id)
    state = fold_user(history.events)
    if not state.exists:
        raise NotFoundError(f"user {user_id} not found", hint="check the user id")
    now = (clock or (lambda: datetime.now(UTC)))()
    event = UserLimitsSet(
        **ctx.envelope("UserLimitsSet", user_id, now),
        max_queued_jobs=limits.max_queued_jobs,
        max_running_jobs=limits.max_running_jobs,
    )
    return await store.append(event, expected=state.last_seq)

"""What a projection commit tells its listeners: the NOTIFY payload.

    "<last> <previous> [webhooks] <job_id>=<seq> ..."
                                             the commit moved the checkpoint from
                                             `previous` to `last`; the listed jobs' rows
                                             changed, each now at its `seq`; `webhooks`:
                                             it changed a webhook subscription
    "<last>"                                 the commit does not say which rows changed
                                             (too many jobs for a payload, or a rebuild)

Long polls on jobs wake from the listed jobs without a query (`ProjectionWatermark.
job_moved`), and the notifier keeps each owner's subscriptions until a commit changes
one (`ProjectionWatermark.webhooks_changed`); a commit that does not say sends them
back to reading the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from events import StoredEvent

__all__ = ["Commit", "commit_notice", "parse_notice"]

# Postgres refuses a payload of 8000 bytes or more; a commit with more changed jobs than
# fit says only its checkpoint.
_MAX_PAYLOAD: Final = 7000


class Commit(msgspec.Struct, frozen=True):
    last: int
    previous: int | None = None  # None: which jobs changed is not said
    jobs: dict[str, int] = {}  # job id -> the seq of its last event in the commit
    webhooks: bool = False  # a webhook subscription changed


def commit_notice(previous: int, events: Sequence[StoredEvent]) -> str:
    """The payload for a commit of `events`, continuing from checkpoint `previous`."""
    last = events[-1].seq
    jobs: dict[str, int] = {}
    webhooks = False
    for stored in events:
        aggregate = stored.event.aggregate
        if aggregate == "job":
            jobs[stored.event.aggregate_id] = stored.seq
        elif aggregate == "webhook":
            webhooks = True
    words = [str(last), str(previous), *(["webhooks"] if webhooks else [])]
    text = " ".join([*words, *(f"{job}={seq}" for job, seq in jobs.items())])
    return text if len(text) < _MAX_PAYLOAD else str(last)


def parse_notice(payload: str) -> Commit:
    """Raises ValueError for a payload that is not a notice."""
    last, *rest = payload.split(" ")
    if not rest:
        return Commit(int(last))
    jobs = {}
    webhooks = False
    for item in rest[1:]:
        job, equals, seq = item.partition("=")
        if equals:
            jobs[job] = int(seq)
        elif item == "webhooks":
            webhooks = True
    return Commit(int(last), int(rest[0]), jobs, webhooks)

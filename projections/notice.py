"""What a projection commit tells its listeners: the NOTIFY payload.

    "<last> <previous> [webhooks] <job_id>=<seq>[!] ..."
                                             the commit moved the checkpoint from
                                             `previous` to `last`; the listed jobs' rows
                                             changed, each now at its `seq` (`!`: the job
                                             ended); `webhooks`: it changed a webhook
                                             subscription
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

from events import JobCanceled, JobFailed, JobSucceeded, StoredEvent

__all__ = ["Commit", "commit_notice", "parse_notice"]

# Postgres refuses a payload of 8000 bytes or more; a commit with more changed jobs than
# fit says only its checkpoint.
_MAX_PAYLOAD: Final = 7000


class Commit(msgspec.Struct, frozen=True):
    last: int
    previous: int | None = None  # None: which jobs changed is not said
    jobs: dict[str, int] = {}  # job id -> the seq of its last event in the commit
    webhooks: bool = False  # a webhook subscription changed
    ended: frozenset[str] = frozenset()  # the jobs that ended (succeeded, failed, canceled)


def commit_notice(previous: int, events: Sequence[StoredEvent]) -> str:
    """The payload for a commit of `events`, continuing from checkpoint `previous`."""
    last = events[-1].seq
    jobs: dict[str, int] = {}
    ended: set[str] = set()
    webhooks = False
    for stored in events:
        event = stored.event
        if event.aggregate == "job":
            jobs[event.aggregate_id] = stored.seq
            if isinstance(event, JobSucceeded | JobFailed | JobCanceled):
                ended.add(event.aggregate_id)
        elif event.aggregate == "webhook":
            webhooks = True
    words = [str(last), str(previous), *(["webhooks"] if webhooks else [])]
    listed = (f"{job}={seq}{'!' if job in ended else ''}" for job, seq in jobs.items())
    text = " ".join([*words, *listed])
    return text if len(text) < _MAX_PAYLOAD else str(last)


def parse_notice(payload: str) -> Commit:
    """Raises ValueError for a payload that is not a notice."""
    last, *rest = payload.split(" ")
    if not rest:
        return Commit(int(last))
    jobs = {}
    ended = set()
    webhooks = False
    for item in rest[1:]:
        job, equals, seq = item.partition("=")
        if equals:
            if seq.endswith("!"):
                seq = seq[:-1]
                ended.add(job)
            jobs[job] = int(seq)
        elif item == "webhooks":
            webhooks = True
    return Commit(int(last), int(rest[0]), jobs, webhooks, frozenset(ended))

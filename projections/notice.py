"""What a projection commit tells its listeners: the NOTIFY payload.

    "<last> <previous> [models] [webhooks] <job_id>=<seq>[!] ..."
                                             the commit moved the checkpoint from
                                             `previous` to `last`; the listed jobs' rows
                                             changed, each now at its `seq` (`!`: the job
                                             ended); `models`, `webhooks`: it changed a
                                             model, a webhook subscription
    "<last>"                                 the commit does not say which rows changed
                                             (too many jobs for a payload, or a rebuild)

Long polls on jobs wake from the listed jobs without a query (`ProjectionWatermark.
job_moved`); the notifier keeps each owner's subscriptions, and the API the ready
versions jobs are submitted to, until a commit changes a webhook, a model
(`ProjectionWatermark.changed`). A commit that does not say sends them back to reading
the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from events import TERMINAL_JOB_EVENTS, StoredEvent

__all__ = ["NAMED_AGGREGATES", "Commit", "commit_notice", "parse_notice"]

# Postgres refuses a payload of 8000 bytes or more; a commit with more changed jobs than
# fit says only its checkpoint.
_MAX_PAYLOAD: Final = 7000


# The aggregates whose change a notice names (as the word after the name: "models").
NAMED_AGGREGATES: Final = ("model", "webhook")


class Commit(msgspec.Struct, frozen=True):
    last: int
    previous: int | None = None  # None: which jobs changed is not said
    jobs: dict[str, int] = {}  # job id -> the seq of its last event in the commit
    changed: frozenset[str] = frozenset()  # the NAMED_AGGREGATES the commit changed
    ended: frozenset[str] = frozenset()  # the jobs that ended (a terminal job event)


def commit_notice(previous: int, events: Sequence[StoredEvent]) -> str:
    """The payload for a commit of `events`, continuing from checkpoint `previous`."""
    last = events[-1].seq
    jobs: dict[str, int] = {}
    ended: set[str] = set()
    changed: set[str] = set()
    for stored in events:
        event = stored.event
        if event.aggregate == "job":
            jobs[event.aggregate_id] = stored.seq
            if isinstance(event, TERMINAL_JOB_EVENTS):
                ended.add(event.aggregate_id)
        elif event.aggregate in NAMED_AGGREGATES:
            changed.add(event.aggregate)
    words = [str(last), str(previous), *(f"{a}s" for a in NAMED_AGGREGATES if a in changed)]
    listed = (f"{job}={seq}{'!' if job in ended else ''}" for job, seq in jobs.items())
    text = " ".join([*words, *listed])
    return text if len(text) < _MAX_PAYLOAD else str(last)


_BY_WORD: Final = {f"{aggregate}s": aggregate for aggregate in NAMED_AGGREGATES}


def parse_notice(payload: str) -> Commit:
    """Raises ValueError for a payload that is not a notice."""
    last, *rest = payload.split(" ")
    if not rest:
        return Commit(int(last))
    jobs = {}
    ended = set()
    changed = set()
    for item in rest[1:]:
        job, equals, seq = item.partition("=")
        if equals:
            if seq.endswith("!"):
                seq = seq[:-1]
                ended.add(job)
            jobs[job] = int(seq)
        elif item in _BY_WORD:
            changed.add(_BY_WORD[item])
    return Commit(int(last), int(rest[0]), jobs, frozenset(changed), frozenset(ended))

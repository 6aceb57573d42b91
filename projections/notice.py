"""What a projection commit tells its listeners: the NOTIFY payload.

    "<last> <previous> <job_id>=<seq> ..."   the commit moved the checkpoint from
                                             `previous` to `last`; the listed jobs' rows
                                             changed, each now at its `seq`
    "<last>"                                 the commit does not say which rows changed
                                             (too many jobs for a payload, or a rebuild)

Long polls on jobs wake from the listed jobs without a query (`ProjectionWatermark.
job_moved`); an unlisted commit sends them back to reading the rows.
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


def commit_notice(previous: int, events: Sequence[StoredEvent]) -> str:
    """The payload for a commit of `events`, continuing from checkpoint `previous`."""
    last = events[-1].seq
    jobs: dict[str, int] = {}
    for stored in events:
        if stored.event.aggregate == "job":
            jobs[stored.event.aggregate_id] = stored.seq
    text = " ".join([str(last), str(previous), *(f"{job}={seq}" for job, seq in jobs.items())])
    return text if len(text) < _MAX_PAYLOAD else str(last)


def parse_notice(payload: str) -> Commit:
    """Raises ValueError for a payload that is not a notice."""
    last, *rest = payload.split(" ")
    if not rest:
        return Commit(int(last))
    jobs = {}
    for item in rest[1:]:
        job, _, seq = item.partition("=")
        jobs[job] = int(seq)
    return Commit(int(last), int(rest[0]), jobs)

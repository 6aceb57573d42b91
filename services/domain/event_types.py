"""Webhook event types (`job.succeeded`, ...), subscription filters, and which log
events they come from.

A subscription's filter is a list of types or globs (`job.*`, `*`). A job's own webhook
(`JobRequested.webhook`, Replicate-style) names events from {start, output, completed}:
`start` is job.started, `output` is job.succeeded (outputs exist once a job succeeds),
`completed` is any terminal one: job.succeeded, job.failed, job.canceled, job.aborted.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Final

from events import (
    AnyEvent,
    BuildFailed,
    BuildStarted,
    ClinaiError,
    JobAborted,
    JobCanceled,
    JobCancelRequested,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSucceeded,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    VersionBuilt,
    VersionUploaded,
)
from events.subjects import PREFIX

__all__ = [
    "JOB_HOOK_TYPES",
    "SOURCE_SUBJECTS",
    "WEBHOOK_TYPES",
    "InvalidFilterError",
    "check_filter",
    "job_hook_wants",
    "matches",
    "webhook_type",
]

_BY_EVENT: Final[dict[type[AnyEvent], str]] = {
    JobRequested: "job.created",
    JobStarted: "job.started",
    JobSucceeded: "job.succeeded",
    JobFailed: "job.failed",
    JobCancelRequested: "job.cancel_requested",
    JobCanceled: "job.canceled",
    JobAborted: "job.aborted",
    VersionUploaded: "version.uploaded",
    BuildStarted: "version.building",
    VersionBuilt: "version.built",
    BuildFailed: "version.failed",
    ModelCreated: "model.created",
    ModelUpdated: "model.updated",
    ModelDeleted: "model.deleted",
}

WEBHOOK_TYPES: Final = tuple(sorted(set(_BY_EVENT.values())))

JOB_HOOK_TYPES: Final[dict[str, frozenset[str]]] = {
    "start": frozenset({"job.started"}),
    "output": frozenset({"job.succeeded"}),
    "completed": frozenset({"job.succeeded", "job.failed", "job.canceled", "job.aborted"}),
}

# What the notifier's durable consumer reads.
SOURCE_SUBJECTS: Final = tuple(
    f"{PREFIX}.{event.aggregate}.*.{event.__name__}" for event in _BY_EVENT
)


class InvalidFilterError(ClinaiError, ValueError):
    """A filter pattern that matches no webhook type."""


def webhook_type(event: AnyEvent) -> str | None:
    """The webhook type of a log event; None for events not delivered as webhooks."""
    name = _BY_EVENT.get(type(event))
    if isinstance(event, JobFailed) and event.kind == "canceled":
        return "job.canceled"
    return name


def matches(patterns: Iterable[str], event_type: str) -> bool:
    return any(fnmatch.fnmatchcase(event_type, p) for p in patterns)


def check_filter(patterns: Iterable[str]) -> tuple[str, ...]:
    """The patterns, each checked to match at least one webhook type."""
    out = tuple(p.strip() for p in patterns)
    if not out:
        raise InvalidFilterError("give at least one event type, e.g. ['job.*']")
    for pattern in out:
        if not any(fnmatch.fnmatchcase(t, pattern) for t in WEBHOOK_TYPES):
            raise InvalidFilterError(
                f"{pattern!r} matches no event type; types are {', '.join(WEBHOOK_TYPES)}"
            )
    return out


def job_hook_wants(events: Iterable[str], event_type: str) -> bool:
    """Whether a job's own webhook with `events` ⊂ {start, output, completed} wants it."""
    return any(event_type in JOB_HOOK_TYPES.get(e, frozenset()) for e in events)

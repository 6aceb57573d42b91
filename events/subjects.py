"""Subjects on the one stream: `clinai.<aggregate>.<aggregate_id>.<EventType>`."""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "AGGREGATES",
    "PREFIX",
    "Aggregate",
    "aggregate_filter",
    "event_subject",
    "parse_subject",
]

PREFIX = "clinai"

Aggregate = Literal["user", "apikey", "model", "modelname", "version", "job", "webhook", "delivery"]
AGGREGATES: tuple[Aggregate, ...] = (
    "user",
    "apikey",
    "model",
    "modelname",
    "version",
    "job",
    "webhook",
    "delivery",
)

# One search of the token (a hot path: several tokens per append), not a test a character.
_FORBIDDEN = re.compile("[.*> \t\r\n]")


def _check_token(token: str, what: str) -> str:
    if not token or _FORBIDDEN.search(token):
        raise ValueError(f"{what} {token!r} is not a valid subject token")
    return token


def event_subject(aggregate: str, aggregate_id: str, event_type: str) -> str:
    return (
        f"{PREFIX}.{_check_token(aggregate, 'aggregate')}."
        f"{_check_token(aggregate_id, 'aggregate id')}.{_check_token(event_type, 'event type')}"
    )


def aggregate_filter(aggregate: str, aggregate_id: str) -> str:
    """The canonical filter for optimistic concurrency on one aggregate."""
    agg = _check_token(aggregate, "aggregate")
    return f"{PREFIX}.{agg}.{_check_token(aggregate_id, 'aggregate id')}.*"


def parse_subject(subject: str) -> tuple[str, str, str]:
    """(aggregate, aggregate_id, event_type) of an event subject."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise ValueError(f"{subject!r} is not a ClinAI event subject")
    return parts[1], parts[2], parts[3]

"""What the notifier needs to know before it looks for subscribers: a resource's owner
and, for a job, its own webhook. Both are set by the resource's creating event and never
change, so they are cached (bounded, least recently used first out) and a snapshot of
the resource is built only when someone is to receive it."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec

from events import AnyEvent, JobRequested, ModelCreated, VersionUploaded

__all__ = ["Receivers", "ReceiversCache", "receivers_of"]


class Receivers(msgspec.Struct, frozen=True, kw_only=True):
    owner: str
    job_webhook: dict[str, Any] | None = None  # a job's own {url, events}


def receivers_of(event: AnyEvent) -> Receivers | None:
    """Who receives a resource's events, as its creating event states; None for any
    other event."""
    match event:
        case JobRequested():
            hook = None if event.webhook is None else msgspec.to_builtins(event.webhook)
            return Receivers(owner=event.owner, job_webhook=hook)
        case VersionUploaded() | ModelCreated():
            return Receivers(owner=event.owner)
        case _:
            return None


class ReceiversCache:
    """(aggregate, id) → Receivers, holding at most `max_size` entries."""

    def __init__(self, max_size: int = 50_000) -> None:
        if max_size <= 0:
            raise ValueError(f"ReceiversCache: max_size must be positive, got {max_size}")
        self._max = max_size
        self._entries: OrderedDict[tuple[str, str], Receivers] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, aggregate: str, resource_id: str) -> Receivers | None:
        key = (aggregate, resource_id)
        facts = self._entries.get(key)
        if facts is not None:
            self._entries.move_to_end(key)
        return facts

    def put(self, aggregate: str, resource_id: str, facts: Receivers) -> None:
        key = (aggregate, resource_id)
        self._entries[key] = facts
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

"""`StoredEvent`: an event with its stream sequence (re-exported by `events.store`)."""

from __future__ import annotations

import msgspec

from events.catalogue import AnyEvent

__all__ = ["StoredEvent"]


class StoredEvent(msgspec.Struct, frozen=True):
    seq: int
    event: AnyEvent

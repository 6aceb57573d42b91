"""A nats-server that takes only small messages (its `max_payload` set in a config file),
for tests of what happens when an event is larger than the server accepts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from services.embedded import EmbeddedNats

__all__ = ["small_nats"]


@contextlib.contextmanager
def small_nats(directory: Path, max_payload: int) -> Iterator[str]:
    """The URL of a fresh JetStream server under `directory` taking messages of at most
    `max_payload` bytes."""
    server = EmbeddedNats(directory / "nats", max_payload=max_payload)
    url = server.start_blocking()
    try:
        yield url
    finally:
        server.stop_blocking()

"""A nats-server that takes only small messages (its `max_payload` set in a config file),
for tests of what happens when an event is larger than the server accepts."""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Iterator
from pathlib import Path

from services.embedded import EmbeddedNats
from services.embedded.nats import find_nats_server

__all__ = ["small_nats"]


@contextlib.contextmanager
def small_nats(directory: Path, max_payload: int) -> Iterator[str]:
    """The URL of a fresh JetStream server under `directory` taking messages of at most
    `max_payload` bytes. A launcher script passes the config file before the flags
    `EmbeddedNats` gives."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "small.conf"
    conf.write_text(f"max_payload: {max_payload}\n")
    launcher = directory / "nats-server"
    launcher.write_text(f'#!/bin/sh\nexec {find_nats_server()} -c {conf} "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    server = EmbeddedNats(directory / "nats", binary=launcher)
    url = server.start_blocking()
    try:
        yield url
    finally:
        server.stop_blocking()

"""Build output streamed into `BuildLogAppended` events while the build runs.

Lines are batched: a chunk goes out every `flush_interval_s` or as soon as
`flush_bytes` are buffered, so a client can follow the log live without one event per
pip line. Every append carries the version aggregate's expected sequence, tracked from
chunk to chunk: if another builder took the version over, the next append conflicts and
this build stops (`SupersededError`). The full log is kept in a file for the blob store.
Host paths given as `hide` are replaced in everything written (users see paths relative
to their package, not the platform's layout).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from events import BuildLogAppended, ClinaiError, ConcurrencyConflictError, EventStore, scrub_text

__all__ = ["BuildLog", "SupersededError"]

_MAX_EVENT_TEXT = 64 * 1024  # one event's text; a larger flush is split


class SupersededError(ClinaiError):
    """Another writer appended to the version while this build ran (a newer attempt)."""

    def __init__(self, version_id: str) -> None:
        super().__init__(f"version {version_id} was taken over by another build attempt")
        self.version_id = version_id


class BuildLog:
    """Use as `async with BuildLog(...) as log:`; pass `log.write` as the runtime's sink."""

    def __init__(
        self,
        store: EventStore,
        *,
        version_id: str,
        expected_seq: int,
        first_index: int,
        file: Path,
        envelope: Callable[[], dict[str, Any]],
        flush_interval_s: float = 0.5,
        flush_bytes: int = 16 * 1024,
        tail_lines: int = 40,
        hide: Sequence[tuple[str, str]] = (),
    ) -> None:
        if flush_interval_s <= 0 or flush_bytes <= 0:
            raise ValueError("BuildLog: flush_interval_s and flush_bytes must be positive")
        self._store = store
        self._version_id = version_id
        self.seq = expected_seq  # the version aggregate's last sequence, as we know it
        self._index = first_index
        self._path = file
        self._envelope = envelope
        self._interval = flush_interval_s
        # Longest first: a path inside another is replaced before it.
        self._hide = sorted((p for p in hide if p[0]), key=lambda p: -len(p[0]))
        self._flush_bytes = flush_bytes
        self._buffer: list[str] = []
        self._buffered = 0
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._lock = asyncio.Lock()
        self._error: BaseException | None = None
        self._file: BinaryIO | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self._path

    async def __aenter__(self) -> BuildLog:
        self._file = self._path.open("wb")
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            # Not in the middle of its flush: an append cancelled after it was sent is
            # stored, but its sequence never reaches `seq`, and the next append would
            # conflict with it (the build "superseded" by its own log, never ended).
            async with self._lock:
                self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        try:
            if self._error is None:
                await self.flush()
        finally:
            if self._file is not None:
                self._file.close()

    async def write(self, text: str) -> None:
        """The runtime's log sink. Raises SupersededError once the version moved on."""
        if self._error is not None:
            raise self._error
        if not text:
            return
        text = scrub_text(self.hidden(text))  # build output is kept whatever it holds
        if self._file is not None:
            self._file.write(text.encode(errors="replace"))
        self._tail.extend(text.splitlines())
        self._buffer.append(text)
        self._buffered += len(text)
        if self._buffered >= self._flush_bytes:
            await self.flush()

    def hidden(self, text: str) -> str:
        """`text` with the host paths this log hides replaced."""
        for path, shown in self._hide:
            if path in text:
                text = text.replace(path, shown)
        return text

    def tail(self) -> str:
        return "\n".join(self._tail)

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            text = "".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            for start in range(0, len(text), _MAX_EVENT_TEXT):
                await self._append(text[start : start + _MAX_EVENT_TEXT])

    async def _append(self, text: str) -> None:
        event = BuildLogAppended(**self._envelope(), index=self._index, text=text)
        try:
            self.seq = await self._store.append(event, expected=self.seq)
        except ConcurrencyConflictError as err:
            self._error = SupersededError(self._version_id)
            raise self._error from err
        self._index += 1

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except SupersededError:
                return  # the next write() raises it
            except Exception as err:  # surfaced by the next write()
                self._error = err
                return

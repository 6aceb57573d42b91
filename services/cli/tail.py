"""`clinai tail`: the log as it is, read from JetStream directly (an operator's tool).

    clinai tail [--type GLOB] [--aggregate job|version|...] [--id ID]
                [--since 10m | --from-seq N] [--follow] [--json]

An ordered consumer starts at the right place on the server (by start sequence or by
start time, with a subject filter built from --aggregate/--id/--type), so it starts at
once on a stream of millions of events. Without a start it shows a filtered stream from
its beginning (e.g. one resource's history with --id), or the last 10 events of an
unfiltered one. Without --follow it stops at the stream's last sequence at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TextIO

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from events import StoredEvent, decode_event
from events.subjects import PREFIX
from services.cli._tail_format import format_human, format_json
from services.infra.connections import nats_credentials

__all__ = ["TailOptions", "parse_duration", "run_tail", "tail"]

Clock = Callable[[], datetime]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DEFAULT_LAST = 10
_BAD_TOKEN = frozenset(".*> \t\r\n")


class TailOptions(msgspec.Struct, frozen=True, kw_only=True):
    type_glob: str | None = None
    aggregate: str | None = None
    resource_id: str | None = None
    since: timedelta | None = None
    from_seq: int | None = None
    follow: bool = False
    json: bool = False

    def __post_init__(self) -> None:
        if self.since is not None and self.from_seq is not None:
            raise ValueError("give --since or --from-seq, not both")
        if self.from_seq is not None and self.from_seq < 1:
            raise ValueError("--from-seq is a stream sequence (1 or more)")
        for name, value in (("--aggregate", self.aggregate), ("--id", self.resource_id)):
            if value is not None and (not value or any(c in _BAD_TOKEN for c in value)):
                raise ValueError(f"{name} is one name or id, without . * > or spaces")

    @property
    def literal_type(self) -> str | None:
        glob = self.type_glob
        if glob and not any(c in glob for c in "*?[") and not any(c in _BAD_TOKEN for c in glob):
            return glob
        return None

    @property
    def subject(self) -> str:
        parts = (self.aggregate or "*", self.resource_id or "*", self.literal_type or "*")
        return f"{PREFIX}.>" if parts == ("*", "*", "*") else f"{PREFIX}.{'.'.join(parts)}"


def parse_duration(text: str) -> timedelta:
    """`90s`, `10m`, `2h`, `1d`."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s, 10m, 2h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


def _start(options: TailOptions, last: int, clock: Clock) -> ConsumerConfig:
    if options.from_seq is not None:
        return ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=options.from_seq
        )
    if options.since is not None:
        start = (clock() - options.since).astimezone(UTC)
        return ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
        )
    if options.subject == f"{PREFIX}.>":
        if options.follow:
            return ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        return ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(last - _DEFAULT_LAST + 1, 1),
        )
    return ConsumerConfig(deliver_policy=DeliverPolicy.ALL)


async def tail(
    nc: NATS,
    options: TailOptions,
    out: TextIO,
    *,
    stream: str = "CLINAI",
    colour: bool = False,
    clock: Clock | None = None,
) -> int:
    """Print events as `options` says until the end (or forever with follow); return
    how many were printed."""
    js = nc.jetstream()
    last = (await js.stream_info(stream)).state.last_seq
    if not options.follow and (
        last == 0 or (options.from_seq is not None and options.from_seq > last)
    ):
        return 0
    queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=10_000)

    async def on_msg(msg: Msg) -> None:
        await queue.put(msg)

    config = _start(options, last, clock or (lambda: datetime.now(UTC)))
    sub = await js.subscribe(
        options.subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=config.deliver_policy,
        config=config,
        cb=on_msg,
        pending_msgs_limit=100_000,
    )
    printed = 0
    try:
        if not options.follow:
            info = await sub.consumer_info()
            if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
                return 0  # nothing matches: nothing was or will be delivered
        while True:
            msg = await queue.get()
            meta = msg.metadata
            seq = meta.sequence.stream
            if not options.follow and seq > last:
                break
            event = decode_event(msg.data)
            if options.type_glob is None or fnmatch.fnmatchcase(event.type, options.type_glob):
                stored = StoredEvent(seq, event)
                line = format_json(stored) if options.json else format_human(stored, colour=colour)
                out.write(line + "\n")
                printed += 1
            if queue.empty():
                out.flush()
            if not options.follow and (seq >= last or meta.num_pending == 0):
                break
    finally:
        out.flush()
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return printed


async def run_tail(servers: str | list[str], stream: str, options: TailOptions) -> int:
    listed = [servers] if isinstance(servers, str) else servers
    nc = await nats.connect(
        servers,
        name="clinai-tail",
        connect_timeout=5,
        **nats_credentials(listed),
    )
    try:
        return await tail(nc, options, sys.stdout, stream=stream, colour=sys.stdout.isatty())
    finally:
        with contextlib.suppress(Exception):
            await nc.close()

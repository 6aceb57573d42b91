"""The projector and the rebuild as services: wiring from the settings to `projections`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal

import asyncpg

from events import EventStore
from projections import Projector
from projections.db import connect
from projections.quarantine import count_quarantined
from projections.queries import checkpoint
from projections.rebuild import rebuild
from services.infra.connections import connect_nats, open_event_store
from services.metrics import ProjectionProbe, ServiceMetrics, serving_metrics
from services.outages import Outage
from services.settings import Settings, SettingsError

__all__ = ["rebuild_command", "run_projector", "status_command"]

log = logging.getLogger("clinai.projector")

_MIN_BACKOFF_S = 0.2
_MAX_BACKOFF_S = 2.0
# Postgres is away (refused, shutting down, the connection lost): wait and project again.
_POSTGRES_AWAY = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


def _dsn(settings: Settings) -> str:
    if settings.database_url is None:
        raise SettingsError("CLINAI_DATABASE_URL is not set: point it at Postgres")
    return settings.database_url


async def run_projector(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Project until SIGTERM/SIGINT (or `stop`); a standby waits for the leader's lock.

    The ordered consumer that follows the log lives on the NATS server it was created
    on: when the connection comes back (a restarted server has lost it, and nats.py
    does not notice), the projector stops and follows again from its checkpoint."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nats_outage = Outage("NATS", log)
    nc = await connect_nats(settings, name="projector", outage=nats_outage)
    try:
        store = await open_event_store(settings, nc)
        metrics = ServiceMetrics("projector")
        ProjectionProbe(metrics, store.stream_last_seq, functools.partial(_checkpoint, settings))
        async with serving_metrics(metrics, settings):
            await _project(settings, store, nats_outage, stop)
    finally:
        await nc.drain()


async def _project(
    settings: Settings, store: EventStore, nats_outage: Outage, stop: asyncio.Event
) -> None:
    """Project (or wait as a standby) until `stop`, through Postgres outages."""
    projector = Projector(
        _dsn(settings), store, busy_interval_s=settings.projection_busy_interval_s
    )
    postgres = Outage("Postgres", log)
    backoff = _MIN_BACKOFF_S
    while not stop.is_set():
        round_over = asyncio.Event()
        nats_outage.on_recovered(round_over.set)
        watch = asyncio.ensure_future(stop.wait())
        watch.add_done_callback(functools.partial(_set, round_over))
        try:
            if postgres.down:
                await (await asyncpg.connect(_dsn(settings))).close()
                postgres.recovered()
                backoff = _MIN_BACKOFF_S
            await projector.run(round_over)
        except _POSTGRES_AWAY as err:
            # Wait for it here rather than exit: one line when it goes, one when back.
            postgres.failed(err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
            continue
        finally:
            watch.cancel()
            nats_outage.forget(round_over.set)
        if not stop.is_set():
            log.warning("following the log again from sequence %s", projector.checkpoint + 1)


async def _checkpoint(settings: Settings) -> int:
    """The read models' checkpoint, read from Postgres (this process may be a standby)."""
    conn = await connect(_dsn(settings))
    try:
        return await checkpoint(conn)
    except asyncpg.UndefinedTableError:  # no projector has started yet
        return 0
    finally:
        await conn.close()


def _set(event: asyncio.Event, _: object) -> None:
    event.set()


async def rebuild_command(settings: Settings) -> None:
    nc = await connect_nats(settings, name="rebuild")
    try:
        report = await rebuild(_dsn(settings), await open_event_store(settings, nc))
    finally:
        await nc.drain()
    print(
        f"rebuilt the read models from {report.events} events in {report.seconds:.2f}s "
        f"({report.events_per_s:,.0f} events/s) and swapped them in"
    )
    if report.quarantined:
        print(
            f"{report.quarantined} event(s) could not be stored and are quarantined: "
            "SELECT * FROM read_model.quarantine"
        )


_QUARANTINE_SQL = "SELECT seq, subject, error FROM quarantine ORDER BY seq DESC LIMIT $1"


async def status_command(settings: Settings, *, shown: int = 20) -> None:
    """`clinai projections status`: how far the read models are, and what they skipped."""
    nc = await connect_nats(settings, name="projections-status")
    try:
        stream_seq = await (await open_event_store(settings, nc)).stream_last_seq()
    finally:
        await nc.drain()
    conn = await connect(_dsn(settings))
    try:
        try:
            projected = await checkpoint(conn)
        except asyncpg.UndefinedTableError:  # the projector has not started yet
            projected = 0
        quarantined = await count_quarantined(conn)
        rows = await conn.fetch(_QUARANTINE_SQL, shown) if quarantined else []
    finally:
        await conn.close()
    print(
        f"read models at sequence {projected} of {stream_seq} "
        f"({max(stream_seq - projected, 0)} behind); {quarantined} event(s) quarantined"
    )
    for row in reversed(rows):
        print(f"  seq {row['seq']} {row['subject']}: {row['error']}")
    if quarantined > len(rows):
        print(f"  ... and {quarantined - len(rows)} earlier: SELECT * FROM read_model.quarantine")

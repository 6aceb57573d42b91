"""The projector and the rebuild as services: wiring from the settings to `projections`."""

from __future__ import annotations

import asyncio
import signal

import asyncpg

from projections import Projector
from projections.db import connect
from projections.quarantine import count_quarantined
from projections.queries import checkpoint
from projections.rebuild import rebuild
from services.resources import connect_nats, open_event_store
from services.settings import Settings, SettingsError

__all__ = ["rebuild_command", "run_projector", "status_command"]


def _dsn(settings: Settings) -> str:
    if settings.database_url is None:
        raise SettingsError("CLINAI_DATABASE_URL is not set: point it at Postgres")
    return settings.database_url


async def run_projector(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Project until SIGTERM/SIGINT (or `stop`); a standby waits for the leader's lock."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nc = await connect_nats(settings, name="projector")
    try:
        store = await open_event_store(settings, nc)
        projector = Projector(
            _dsn(settings), store, busy_interval_s=settings.projection_busy_interval_s
        )
        await projector.run(stop)
    finally:
        await nc.drain()


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

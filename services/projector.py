"""The projector and the rebuild as services: wiring from the settings to `projections`."""

from __future__ import annotations

import asyncio
import signal

from projections import Projector
from projections.rebuild import rebuild
from services.resources import connect_nats, open_event_store
from services.settings import Settings, SettingsError

__all__ = ["rebuild_command", "run_projector"]


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

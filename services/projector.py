"""The projector and the rebuild as services: wiring from the settings to `projections`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal

import asyncpg

from projections import Projector
from projections.rebuild import rebuild
from services.outages import Outage
from services.resources import connect_nats, open_event_store
from services.settings import Settings, SettingsError

__all__ = ["rebuild_command", "run_projector"]

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
    finally:
        await nc.drain()


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

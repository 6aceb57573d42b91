"""`clinai up`: the embedded default on one machine. Starts NATS and Postgres from their
wheels under the data directory (unless CLINAI_NATS_URL / CLINAI_DATABASE_URL point at
existing ones), each requiring the data folder's credentials (`credentials`), prepares
the stream and tables, issues an admin key on first start, then runs every service
under one supervisor until Ctrl-C. An embedded server that dies is restarted on its
port with a backoff, like the services (which reconnect); the services waiting out a
backoff then start at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import msgspec

from projections import LIVE_SCHEMA, apply_migrations
from services.domain import CommandContext, Commands, ConflictError
from services.embedded import EmbeddedError, EmbeddedNats, EmbeddedPostgres, EmbeddedServer
from services.embedded.credentials import LocalCredentials
from services.embedded.supervisor import Supervisor
from services.infra.connections import connect_nats, open_event_store, signing_key
from services.settings import Settings

__all__ = [
    "SERVICES",
    "ensure_admin_key",
    "invite_admin",
    "issue_admin_key",
    "run_stack",
    "service_metrics_ports",
]

SERVICES = ("api", "projector", "builder", "executor", "notifier")
ADMIN_USER_ID = "usr_admin"
_DATABASE = "clinai"
_RESTART_BACKOFF_S = (0.2, 10.0)  # first and longest wait between restarts of a server

log = logging.getLogger("clinai.stack")


async def _ensure_database(admin_dsn: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", _DATABASE)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{_DATABASE}"')
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{_DATABASE}"


async def issue_admin_key(settings: Settings) -> str:
    """Issue an admin API key and return its secret (shown once): the admin user with its
    first key on a new deployment, another admin key when the admin exists (a lost key).
    `clinai admin-key` runs it for deployments that run `clinai serve`."""
    nc = await connect_nats(settings, name="bootstrap")
    try:
        commands = Commands(await open_event_store(settings, nc))
        ctx = CommandContext(actor="system", is_admin=True, correlation_id="bootstrap")
        try:
            _, key = await commands.create_user(
                ctx, name="admin", is_admin=True, user_id=ADMIN_USER_ID
            )
        except ConflictError:
            key = await commands.issue_api_key(
                ctx,
                user_id=ADMIN_USER_ID,
                name=f"admin-{datetime.now(UTC):%Y%m%d%H%M%S}",
                is_admin=True,
            )
    finally:
        await nc.drain()
    return key.secret


async def invite_admin(settings: Settings) -> str:
    """A link (shown once; it works once, for 7 days) where the admin sets the password
    they sign in to the dashboard with. `clinai admin-invite` runs it."""
    nc = await connect_nats(settings, name="bootstrap")
    try:
        commands = Commands(await open_event_store(settings, nc))
        ctx = CommandContext(actor="system", is_admin=True, correlation_id="bootstrap")
        invitation = await commands.invite(ctx, ADMIN_USER_ID)
    finally:
        await nc.drain()
    return f"{settings.api_url}/invitation#{invitation.token}"


async def ensure_admin_key(settings: Settings) -> str | None:
    """Issue the admin user and key on first start; return the key's secret then, and
    None on later starts (the key was saved to <data_dir>/admin.key, mode 0600)."""
    key_file = Path(settings.data_dir) / "admin.key"
    if key_file.exists():
        return None
    # The admin may exist with its key file lost: then a new admin key is issued.
    secret = await issue_admin_key(settings)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return secret


def service_metrics_ports(first: int | None) -> dict[str, int]:
    """Each service's metrics port under `clinai up`: from `first` (CLINAI_METRICS_PORT)
    on, in the order of SERVICES, so that they do not collide on one machine; none
    when no port is set."""
    if first is None:
        return {}
    if first + len(SERVICES) - 1 > 65535:
        raise EmbeddedError(
            f"CLINAI_METRICS_PORT={first} leaves no room for {len(SERVICES)} services' ports",
            hint=f"choose a port below {65536 - len(SERVICES) + 1}",
        )
    return {name: first + index for index, name in enumerate(SERVICES)}


class PortInUseError(EmbeddedError):
    """The API's port is taken by another program."""


def _check_port_free(host: str, port: int) -> None:
    """Refuse to start on a port another program listens on: the API could never bind
    it, and a stranger answering there would keep `clinai up` waiting."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise PortInUseError(
                f"cannot serve the API on {host}:{port} ({err.strerror})",
                hint="another program uses that port: stop it, or start ClinAI on another "
                "port with --port N (or CLINAI_PORT)",
            ) from err


async def _wait_ready(url: str, admin_key: str, timeout: float) -> bool:
    """Until the admin key authenticates (the projector has it) and /readyz says ready
    (every service is up: a job submitted now is picked up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    auth = {"Authorization": f"Bearer {admin_key}"}
    per_try = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=per_try) as http:
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(f"{url}/v1/me", headers=auth) as me:
                    async with http.get(f"{url}/readyz") as ready:
                        if me.status == 200 and ready.status == 200:
                            return True
            await asyncio.sleep(0.1)  # polling interval while the services start
    return False


async def _keep_running(server: EmbeddedServer, what: str, supervisor: Supervisor) -> None:
    """Restart `server` whenever it ends by itself, on the same port, with a backoff;
    then let the services that gave up meanwhile start again at once."""
    while True:
        code = await server.wait_exit()
        if code is None:
            return  # stopped on purpose
        down = asyncio.get_running_loop().time()
        log.error("%s exited with status %s; restarting it", what, code)
        backoff, longest = _RESTART_BACKOFF_S
        while True:
            try:
                await server.restart()
                break
            except (EmbeddedError, OSError) as err:
                log.error("%s did not restart (%s); trying again in %.1f s", what, err, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, longest)
        took = asyncio.get_running_loop().time() - down
        log.warning("%s is running again (restarted in %.1f s)", what, took)
        supervisor.retry_now()


async def run_stack(settings: Settings) -> None:
    """`settings.data_dir` must exist and be absolute (the CLI resolves it)."""
    data_dir = settings.data_dir
    nats_server: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    keepers: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _check_port_free(settings.host, settings.port)
    metrics_ports = service_metrics_ports(settings.metrics_port)
    try:
        if settings.nats_url is None or settings.database_url is None:
            credentials = LocalCredentials.of(data_dir)
        if settings.nats_url is None:
            nats_server = EmbeddedNats(
                data_dir / "nats", sync=settings.nats_sync, token=credentials.nats_token
            )
            settings = msgspec.structs.replace(settings, nats_url=await nats_server.start())
        if settings.database_url is None:
            postgres = EmbeddedPostgres(
                data_dir / "postgres", password=credentials.postgres_password
            )
            dsn = await _ensure_database(await postgres.start())
            settings = msgspec.structs.replace(settings, database_url=dsn)
        conn = await asyncpg.connect(settings.database_url)
        try:
            await apply_migrations(conn, LIVE_SCHEMA)
        finally:
            await conn.close()
        signing_key(settings)  # generate it once, before the services race to do so
        secret = await ensure_admin_key(settings)
        env = {
            **os.environ,
            "CLINAI_DATA_DIR": str(data_dir),
            "CLINAI_NATS_URL": settings.nats_url or "",
            "CLINAI_DATABASE_URL": settings.database_url or "",
            "CLINAI_HOST": settings.host,
            "CLINAI_PORT": str(settings.port),
        }
        supervisor = Supervisor(
            SERVICES,
            env,
            env_for={
                name: {"CLINAI_METRICS_PORT": str(port)} for name, port in metrics_ports.items()
            },
        )
        supervised = asyncio.create_task(supervisor.run())
        for server, what in ((nats_server, "nats-server"), (postgres, "postgres")):
            if server is not None:
                keepers.append(asyncio.create_task(_keep_running(server, what, supervisor)))
        admin_key = (data_dir / "admin.key").read_text().strip()
        ready = asyncio.create_task(_wait_ready(settings.api_url, admin_key, 60))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait((ready, stopping), return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()  # Ctrl-C or SIGTERM while starting: stop at once
        stopping.cancel()
        if ready.done() and not ready.cancelled():
            if ready.result():
                print(f"ClinAI is up: {settings.api_url}", flush=True)
                print(f"Dashboard: {settings.api_url}/ (user name: admin)", flush=True)
                if secret is not None:
                    print(f"Admin API key (shown once, also saved to {data_dir / 'admin.key'}):")
                    print(f"  {secret}", flush=True)
                    print("Set the admin's dashboard password (link shown once, works once):")
                    print(f"  {await invite_admin(settings)}", flush=True)
                else:
                    print(f"Admin API key: in {data_dir / 'admin.key'}", flush=True)
                if metrics_ports:
                    listed = ", ".join(f"{n} :{p}" for n, p in metrics_ports.items())
                    print(f"Prometheus metrics on {settings.metrics_host}: {listed}", flush=True)
                print("Press Ctrl-C to stop.", flush=True)
            else:
                print("ClinAI did not become ready in 60 s; see the services' output above.")
        await stop.wait()
        print("Stopping ClinAI...", flush=True)
        supervisor.stop()
        await supervised
    finally:
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        if postgres is not None:
            await postgres.stop()
        if nats_server is not None:
            await nats_server.stop()

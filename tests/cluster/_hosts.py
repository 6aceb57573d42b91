"""A ClinAI cluster on one machine, for the fault tests and `bench/cluster.py`.

Every process is a "host" of its own: its own data folder and ports, sharing only a
3-node NATS JetStream cluster (routes on loopback, the stream with 3 replicas), one
Postgres and one S3 server (moto). The services are `clinai serve <name>` processes,
each in its own session so that a "host" is killed whole (`kill -9` of its process
group: the service and its sandboxed workers).

Builders and executors share no runtime folder either: an executor rebuilds a
version's environment from its package in S3 the first time it runs one of its jobs
(services/executor/_local_builds.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import nats
import orjson

from events import EventStore
from projections import LIVE_SCHEMA, apply_migrations
from projections.db import connect
from services.embedded import EmbeddedNats, EmbeddedPostgres, NatsCluster
from services.embedded.stack import ensure_admin_key
from services.settings import Settings
from tests._infra import free_port
from tests._s3 import create_bucket, s3_env

__all__ = ["Cluster", "NatsNodes", "Service", "cluster_env"]

SERVICE_COUNTS: Mapping[str, int] = {
    "projector": 2,
    "api": 2,
    "builder": 2,
    "executor": 2,
    "notifier": 2,
}


class NatsNodes:
    """Three nats-server processes forming one JetStream cluster on loopback."""

    def __init__(self, root: Path, size: int = 3) -> None:
        route_ports = [free_port() for _ in range(size)]
        self.names = [f"n{i + 1}" for i in range(size)]
        self.ports = [free_port() for _ in range(size)]
        self.servers = {
            name: EmbeddedNats(
                root / f"nats-{name}",
                port,
                cluster=NatsCluster(
                    server_name=name,
                    route_port=route_port,
                    peer_route_ports=tuple(p for p in route_ports if p != route_port),
                ),
                startup_timeout=60.0,
            )
            for name, port, route_port in zip(self.names, self.ports, route_ports, strict=True)
        }

    @property
    def url(self) -> str:
        """Every node, comma-separated: CLINAI_NATS_URL."""
        return ",".join(f"nats://127.0.0.1:{port}" for port in self.ports)

    def start(self, names: list[str] | None = None) -> None:
        """Start the nodes together: each answers once a majority of them runs."""
        failures: list[BaseException] = []

        def start_one(server: EmbeddedNats) -> None:
            try:
                server.start_blocking(server.port)
            except BaseException as err:
                failures.append(err)

        threads = [
            threading.Thread(target=start_one, args=(self.servers[name],))
            for name in names or self.names
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def kill(self, name: str) -> None:
        """`kill -9` of one node (its process group)."""
        pid = self.servers[name].pid
        if pid is None:
            raise AssertionError(f"NATS node {name} is not running")
        os.killpg(pid, signal.SIGKILL)

    def restart(self, name: str) -> None:
        """Start a killed node again on its ports and store."""
        server = self.servers[name]
        server.stop_blocking()  # reaps the killed process
        server.start_blocking(server.port)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop_blocking()


class Service:
    """One `clinai serve <name>` process on a host of its own."""

    def __init__(self, name: str, index: int, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.label = f"{name}{index}"
        self.env = env
        self.log_path = log_dir / f"{self.label}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", self.name],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise AssertionError(f"{self.label} was not started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """`kill -9` of the host: the service and everything it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # workers left behind, if any

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def cluster_env(
    *, nats_url: str, database_url: str, s3_endpoint: str, bucket: str
) -> dict[str, str]:
    """What every host shares: where NATS, Postgres and S3 are, and the keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINAI_")}
    env.update(s3_env(s3_endpoint, bucket))
    env.update(
        {
            "CLINAI_NATS_URL": nats_url,
            "CLINAI_DATABASE_URL": database_url,
            "CLINAI_STREAM_REPLICAS": "3",
            "CLINAI_SIGNING_KEY": "cluster-test-signing-key-0123456789abcdef",
            "CLINAI_WEBHOOK_KEY": "cluster-test-webhook-key-0123456789abcdef",
            "CLINAI_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
            "CLINAI_WEBHOOK_RETRY_BASE_S": "0.5",
            "CLINAI_RATE_LIMIT_PER_S": "0",
            "CLINAI_MAX_CONCURRENT_COMMANDS_PER_KEY": "0",
            "CLINAI_MAX_QUEUED_JOBS_PER_OWNER": "100000",
            "CLINAI_WORKERS_PER_VERSION": "2",
            "CLINAI_WORKERS_TOTAL": "4",
            "CLINAI_READ_YOUR_WRITES_TIMEOUT_S": "5",
        }
    )
    return env


class Cluster:
    """Everything above, started by `start()` and stopped by `stop()`."""

    def __init__(self, root: Path, s3_endpoint: str, counts: Mapping[str, int] = SERVICE_COUNTS):
        self.root = root
        self.s3_endpoint = s3_endpoint
        self.counts = counts
        self.nats = NatsNodes(root)
        self.postgres = EmbeddedPostgres(root / "postgres", fast=True)
        self.services: list[Service] = []
        self.env: dict[str, str] = {}
        self.admin_key = ""
        self.api_urls: list[str] = []

    def start(self) -> None:
        self.nats.start()
        admin_dsn = self.postgres.start_blocking()
        dsn = admin_dsn  # the cluster owns this server: its own database is fine
        bucket = asyncio.run(create_bucket(self.s3_endpoint))
        self.env = cluster_env(
            nats_url=self.nats.url,
            database_url=dsn,
            s3_endpoint=self.s3_endpoint,
            bucket=bucket,
        )
        bootstrap = self.root / "bootstrap"
        bootstrap.mkdir()
        asyncio.run(self._prepare(bootstrap))
        for name, count in self.counts.items():
            for index in range(1, count + 1):
                self.services.append(self._service(name, index))
        for service in self.services:
            service.start()

    def _service(self, name: str, index: int) -> Service:
        host = self.root / f"host-{name}{index}"
        host.mkdir()
        env = {**self.env, "CLINAI_DATA_DIR": str(host)}
        if name == "api":
            port = free_port()
            env["CLINAI_PORT"] = str(port)
            env["CLINAI_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            self.api_urls.append(env["CLINAI_PUBLIC_URL"])
        return Service(name, index, env, self.root)

    async def _prepare(self, bootstrap: Path) -> None:
        """The tables, the R3 stream and the admin key, as a first deployment does."""
        settings = Settings.from_env({**self.env, "CLINAI_DATA_DIR": str(bootstrap)})
        conn = await connect(self.env["CLINAI_DATABASE_URL"])
        try:
            await apply_migrations(conn, LIVE_SCHEMA)
        finally:
            await conn.close()
        nc = await nats.connect(settings.nats_servers)
        try:
            await EventStore.open(nc, stream=settings.stream_name, replicas=3)
        finally:
            await nc.drain()
        self.admin_key = await ensure_admin_key(settings) or ""

    def of(self, name: str) -> list[Service]:
        return [s for s in self.services if s.name == name]

    def dead(self) -> list[Service]:
        return [s for s in self.services if not s.running()]

    def heal(self) -> None:
        """Start again every service that is not running (after a test's fault)."""
        for service in self.dead():
            service.start()

    async def stream_leader(self) -> str:
        """The server name of the node that leads the stream."""
        nc = await nats.connect(self.nats.url.split(","))
        try:
            reply = await nc.request("$JS.API.STREAM.INFO.CLINAI", b"", timeout=5)
        finally:
            await nc.drain()
        info = orjson.loads(reply.data)
        leader: str = info["cluster"]["leader"]
        return leader

    def stop(self) -> None:
        for service in self.services:
            service.stop()
        self.nats.stop()
        self.postgres.stop_blocking()


@contextlib.contextmanager
def running_cluster(
    root: Path, s3_endpoint: str, counts: Mapping[str, int] = SERVICE_COUNTS
) -> Iterator[Cluster]:
    cluster = Cluster(root, s3_endpoint, counts)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

"""The cluster as its users and operators see it: ready APIs, the built models, a
webhook subscription to a local receiver, the leading projector, the read models'
checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import msgspec

from projections import LIVE_SCHEMA
from projections.checkpoint import read_checkpoint
from services.packages import zip_folder
from tests._infra import wait_until
from tests.api._client import Client
from tests.cluster._hosts import Cluster, Service
from tests.notifier._receiver import Receiver

__all__ = [
    "ClusterStack",
    "delivered_jobs",
    "leading_projector",
    "prepare",
    "projected",
    "subscribed",
    "succeeded_in_read_models",
    "wait_ready",
]

_REPO = Path(__file__).resolve().parents[2]
NOOP = _REPO / "bench" / "noop-model"
NAP = _REPO / "tests" / "packages" / "nap"
TERMINAL_TYPES = ["job.succeeded", "job.failed", "job.canceled"]


class ClusterStack(msgspec.Struct):
    cluster: Cluster
    noop_version: str
    nap_version: str

    def admin(self, api: int = 0) -> Client:
        return Client(self.cluster.api_urls[api], self.cluster.admin_key)


async def wait_ready(cluster: Cluster, timeout_s: float = 90.0) -> None:
    """Every API answers /readyz 200 and the admin key authenticates on it."""

    async def ready() -> bool:
        for url in cluster.api_urls:
            client = Client(url, cluster.admin_key)
            try:
                if (await client.get("/readyz")).status != 200:
                    return False
                if (await client.get("/v1/me")).status != 200:
                    return False
            except (aiohttp.ClientError, OSError):
                return False
        return True

    async def checked() -> bool:
        dead = cluster.dead()
        if dead:
            raise AssertionError(
                f"{dead[0].label} exited with {dead[0].proc and dead[0].proc.returncode}:\n"
                + dead[0].log_tail()
            )
        return await ready()

    await wait_until(checked, what="the cluster to be ready", timeout_s=timeout_s, every_s=0.2)


async def _version(admin: Client, name: str, folder: Path, visibility: str = "private") -> str:
    model = (await admin.post("/v1/models", json={"name": name, "visibility": visibility})).body
    package = zip_folder(folder)
    reply = await admin.upload(f"/v1/models/{model['id']}/versions", "package", "p.zip", package)
    if reply.status != 201:
        raise AssertionError(f"upload of {name}: {reply.status} {reply.body}")
    version_id: str = reply.body["id"]

    async def built() -> bool:
        status = (await admin.get(f"/v1/versions/{version_id}")).body.get("status")
        if status == "failed":
            raise AssertionError(f"the {name} model did not build")
        return bool(status == "ready")

    await wait_until(built, what=f"the {name} model to build", timeout_s=300, every_s=0.2)
    return version_id


async def prepare(cluster: Cluster) -> ClusterStack:
    await wait_ready(cluster)
    admin = Client(cluster.api_urls[0], cluster.admin_key)
    noop, nap = await asyncio.gather(
        _version(admin, "noop", NOOP),
        _version(admin, "nap", NAP, "public"),  # run by another owner in the executor test
    )
    return ClusterStack(cluster=cluster, noop_version=noop, nap_version=nap)


@contextlib.asynccontextmanager
async def subscribed(stack: ClusterStack) -> AsyncIterator[Receiver]:
    """A local webhook receiver subscribed to every job's end, for the block."""
    receiver = Receiver()
    await receiver.start()
    admin = stack.admin()
    reply = await admin.post(
        "/v1/webhooks", json={"url": receiver.url("/hooks"), "events": TERMINAL_TYPES}
    )
    if reply.status != 201:
        raise AssertionError(f"webhook subscription: {reply.status} {reply.body}")
    webhook_id = reply.body["id"]
    try:
        yield receiver
    finally:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await admin.request("DELETE", f"/v1/webhooks/{webhook_id}")
        await receiver.stop()


def delivered_jobs(receiver: Receiver) -> set[str]:
    jobs = set()
    for received in receiver.received:
        data = received.json.get("data")
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            jobs.add(data["id"])
    return jobs


async def projected(cluster: Cluster) -> int:
    """The read models' checkpoint (the last sequence applied)."""
    conn = await asyncpg.connect(
        cluster.env["CLINAI_DATABASE_URL"], server_settings={"search_path": LIVE_SCHEMA}
    )
    try:
        return await read_checkpoint(conn)
    finally:
        await conn.close()


async def succeeded_in_read_models(cluster: Cluster, jobs: list[str]) -> int:
    """How many of `jobs` the read models show succeeded."""
    conn = await asyncpg.connect(
        cluster.env["CLINAI_DATABASE_URL"], server_settings={"search_path": LIVE_SCHEMA}
    )
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND status = 'succeeded'", jobs
        )
    finally:
        await conn.close()
    return count


_LOCK_HOLDER_SQL = """
SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
"""


async def leading_projector(cluster: Cluster) -> Service | None:
    """The projector whose Postgres session holds an advisory lock (the leader's)."""
    conn = await asyncpg.connect(cluster.env["CLINAI_DATABASE_URL"])
    try:
        ports = {row["client_port"] for row in await conn.fetch(_LOCK_HOLDER_SQL)}
    finally:
        await conn.close()
    sockets = _local_ports()
    for service in cluster.of("projector"):
        if service.running() and any(sockets.get(i) in ports for i in _socket_inodes(service.pid)):
            return service
    return None


def _local_ports() -> dict[str, int]:
    """Socket inode -> local TCP port, from /proc/net/tcp and tcp6."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                found[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def _socket_inodes(pid: int) -> list[str]:
    inodes = []
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.append(target[8:-1])
    return inodes

"""`clinai up` heals itself: after `kill -9` of its embedded NATS or Postgres under load,
the server is restarted, the services reconnect, jobs succeed again within 10 s and no
accepted job is lost; and the outage is logged once, not once per failure, without the
stack's credentials."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from services.packages import zip_folder
from tests._infra import short_tmp_dir, wait_until
from tests.api._client import Client
from tests.api.conftest import free_port
from tests.embedded.test_stack import _descendants

NOOP = Path(__file__).resolve().parents[2] / "bench" / "noop-model"
_ENDED = ("succeeded", "failed", "canceled")
_HEALED_WITHIN_S = 10.0


class UpStack:
    """`clinai up` on a free port; its log (every service's output) in a file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "up.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLINAI_")}
        env["CLINAI_WORKERS_PER_VERSION"] = "2"
        self._log = open(self.log_path, "wb")  # closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--data-dir", str(data_dir),
             "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    async def wait_up(self) -> Client:
        await wait_until(
            lambda: any(line.startswith("Press Ctrl-C") for line in self.log_lines()),
            what="clinai up to be up",
            timeout_s=120,
            every_s=0.1,
        )
        return Client(self.url, (self.data_dir / "admin.key").read_text().strip())

    def nats_pid(self) -> int:
        return int((self.data_dir / "nats" / "nats-server.pid").read_text().strip())

    def postgres_pid(self) -> int:
        pid_file = self.data_dir / "postgres" / "pgdata" / "postmaster.pid"
        return int(pid_file.read_text().splitlines()[0])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


class Load:
    """Clients submitting no-op jobs one after another. A job counts as accepted once
    the API answered 202 with its id; every accepted job must end `succeeded`."""

    def __init__(self, client: Client, version_id: str, clients: int) -> None:
        self.client = client
        self.version_id = version_id
        self.accepted: dict[str, int] = {}  # job id -> seq
        self.refused = 0
        self.successes: list[float] = []  # when a job submitted then was seen succeeded
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._submit_forever()) for _ in range(clients)]

    async def _submit_forever(self) -> None:
        while not self._stop.is_set():
            submitted = time.monotonic()
            try:
                reply = await self.client.upload(
                    "/v1/jobs?wait=5", "input", "in.txt", b"x", version=self.version_id
                )
            except (aiohttp.ClientError, OSError, TimeoutError):
                self.refused += 1
                await asyncio.sleep(0.05)  # a refused connection: do not spin
                continue
            if reply.status in (200, 202):
                self.accepted[reply.body["id"]] = int(reply.body.get("seq", 0))
                if reply.body["status"] == "succeeded":
                    self.successes.append(submitted)
            else:
                self.refused += 1
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def succeeded_since(self, moment: float) -> bool:
        return any(when >= moment for when in self.successes)


def _zombies(pid: int) -> list[int]:
    return [child for child in _descendants(pid) if _state(child) == "Z"]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


async def noop_version(admin: Client) -> str:
    model = (await admin.post("/v1/models", json={"name": "noop"})).body
    package = zip_folder(NOOP)
    reply = await admin.upload(f"/v1/models/{model['id']}/versions", "package", "p.zip", package)
    assert reply.status == 201, reply.body
    version_id: str = reply.body["id"]

    async def built() -> bool:
        status = (await admin.get(f"/v1/versions/{version_id}")).body.get("status")
        if status == "failed":
            raise AssertionError("the no-op model did not build")
        return bool(status == "ready")

    await wait_until(built, what="the no-op model to build", timeout_s=240, every_s=0.2)
    return version_id


async def _all_succeeded(admin: Client, accepted: dict[str, int]) -> None:
    for job_id in accepted:

        async def ended(job_id: str = job_id) -> bool:
            job = (await admin.get(f"/v1/jobs/{job_id}?wait=5")).body
            if job.get("status") in _ENDED and job["status"] != "succeeded":
                raise AssertionError(f"accepted job {job_id} ended {job['status']}: {job}")
            return bool(job.get("status") == "succeeded")

        await wait_until(ended, what=f"accepted job {job_id} to succeed", timeout_s=60)


async def _kill_and_heal(up: UpStack, admin: Client, version_id: str, pid: int) -> float:
    """kill -9 `pid` under load; the seconds until a job submitted after it succeeds."""
    load = Load(admin, version_id, clients=4)
    await wait_until(lambda: len(load.successes) >= 10, what="jobs under load", timeout_s=30)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    await wait_until(
        lambda: load.succeeded_since(killed),
        what="a job submitted after the kill to succeed",
        timeout_s=60,
    )
    healed = min(when for when in load.successes if when >= killed) - killed
    await load.stop()
    assert load.accepted
    await _all_succeeded(admin, load.accepted)
    return healed


async def test_up_heals_after_kill_9_of_nats_and_of_postgres() -> None:
    with short_tmp_dir("clinai-heal-") as tmp:
        up = UpStack(tmp / "data")
        try:
            admin = await up.wait_up()
            version_id = await noop_version(admin)

            nats_pid = up.nats_pid()
            healed = await _kill_and_heal(up, admin, version_id, nats_pid)
            assert healed < _HEALED_WITHIN_S, f"jobs succeeded again {healed:.1f} s after"
            assert up.nats_pid() != nats_pid

            postgres_pid = up.postgres_pid()
            healed = await _kill_and_heal(up, admin, version_id, postgres_pid)
            assert healed < _HEALED_WITHIN_S, f"jobs succeeded again {healed:.1f} s after"
            assert up.postgres_pid() != postgres_pid
            assert (await admin.get("/healthz")).status == 200
            assert not _zombies(up.proc.pid)  # the killed servers were reaped
        finally:
            up.stop()
        # The outages' log lines (reconnects, restarts) do not show the credentials.
        said = up.log_path.read_text(errors="replace")
        for secret in ("nats.token", "postgres.password"):
            assert (up.data_dir / secret).read_text().strip() not in said, secret

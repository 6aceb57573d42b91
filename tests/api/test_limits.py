"""Per-owner queued-jobs cap (with an admin's override per user) and per-key rate
limits on commands, through the HTTP API of real services (no executor runs here, so
every submitted job stays queued)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.packages import zip_folder
from tests._infra import needs_bubblewrap
from tests.api._client import Client, Reply, new_user
from tests.api.conftest import Stack, free_port, running_stack, start_services, stop_services
from tests.api.conftest import wait_ready as wait_api_ready

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
QUEUED_CAP = 3
BURST = 12


@pytest.fixture(scope="module")
def limits_stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    needs_bubblewrap("building a version")
    env = {
        **stack_env,
        "CLINAI_MAX_QUEUED_JOBS_PER_OWNER": str(QUEUED_CAP),
        "CLINAI_RATE_LIMIT_BURST": str(BURST),
        "CLINAI_RATE_LIMIT_PER_S": "0.05",  # a token every 20 s: none comes back in a test
    }
    with running_stack(env, ["projector", "api", "builder"]) as running:
        yield running


@contextlib.contextmanager
def second_api(stack: Stack) -> Iterator[str]:
    """Another API process on the same NATS and Postgres, on its own port."""
    env = {**stack.env, "CLINAI_PORT": str(free_port())}
    procs = start_services(env, ["api"])
    url = f"http://127.0.0.1:{env['CLINAI_PORT']}"
    try:
        wait_api_ready(url, procs)
        yield url
    finally:
        stop_services(procs)


async def _ready_version(client: Client) -> str:
    model = (await client.post("/v1/models", json={"name": f"m-{uuid.uuid4().hex[:8]}"})).body
    reply = await client.upload(
        f"/v1/models/{model['id']}/versions", "package", "p.zip", zip_folder(PACKAGES / "noop")
    )
    assert reply.status == 201, reply.body
    version_id = reply.body["id"]
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        version = (await client.get(f"/v1/versions/{version_id}")).body
        if version["status"] in ("ready", "failed"):
            assert version["status"] == "ready", version
            return str(version_id)
        assert asyncio.get_running_loop().time() < deadline, version
        await asyncio.sleep(0.2)  # polling interval for a build that takes seconds


async def _submit(client: Client, version_id: str, after_seq: int | None = None) -> Reply:
    headers = {"X-Clinai-After-Seq": str(after_seq)} if after_seq is not None else None
    return await client.upload(
        "/v1/jobs", "input", "in.txt", b"x", headers=headers, version=version_id
    )


async def test_the_queued_cap_answers_429_until_an_admin_raises_it(limits_stack: Stack) -> None:
    ana = await new_user(limits_stack.url, limits_stack.admin_key, "ana")
    ana_id = (await ana.get("/v1/me")).body["user_id"]
    version_id = await _ready_version(ana)
    for _ in range(QUEUED_CAP):
        accepted = await _submit(ana, version_id)
        assert accepted.status == 202, accepted.body

    refused = await _submit(ana, version_id)
    assert refused.status == 429, refused.body
    assert int(refused.headers["retry-after"]) > 0
    assert "max_queued_jobs" in refused.body["detail"]
    assert "CLINAI_MAX_QUEUED_JOBS_PER_OWNER" in refused.body["detail"]
    assert refused.body["queued"] == QUEUED_CAP and refused.body["limit"] == "max_queued_jobs"

    # Only an admin sets limits.
    forbidden = await ana.request("PUT", f"/v1/users/{ana_id}/limits", json={"max_queued_jobs": 9})
    assert forbidden.status == 403, forbidden.body

    admin = Client(limits_stack.url, limits_stack.admin_key)
    raised = await admin.request(
        "PUT", f"/v1/users/{ana_id}/limits", json={"max_queued_jobs": QUEUED_CAP + 2}
    )
    assert raised.status == 200, raised.body
    assert raised.body["in_force"] == {"max_queued_jobs": QUEUED_CAP + 2, "max_running_jobs": 0}
    for _ in range(2):
        accepted = await _submit(ana, version_id, after_seq=raised.body["seq"])
        assert accepted.status == 202, accepted.body
    refused = await _submit(ana, version_id)
    assert refused.status == 429, refused.body
    assert "set for your user by an admin" in refused.body["detail"]
    mine = await ana.get(f"/v1/users/{ana_id}/limits")
    assert mine.body["own"] == {"max_queued_jobs": QUEUED_CAP + 2, "max_running_jobs": None}

    bad = await admin.request("PUT", f"/v1/users/{ana_id}/limits", json={"max_queued_jobs": -1})
    assert bad.status == 422, bad.body
    missing = await admin.request("PUT", "/v1/users/usr_nobody/limits", json={})
    assert missing.status == 404, missing.body


async def test_the_rate_limit_holds_across_two_api_processes(limits_stack: Stack) -> None:
    rita = await new_user(limits_stack.url, limits_stack.admin_key, "rita")
    with second_api(limits_stack) as other_url:
        other = Client(other_url, rita.key)
        replies = []
        for n in range(BURST + 2):
            client = rita if n % 2 else other
            replies.append(
                await client.post("/v1/models", json={"name": f"r-{uuid.uuid4().hex[:8]}"})
            )
        # Reads are not limited.
        assert (await other.get("/v1/models")).status == 200
    statuses = [r.status for r in replies]
    assert statuses == [201] * BURST + [429, 429], statuses
    # Every command's answer says what is left, whichever process answered it.
    remaining = [int(r.headers["ratelimit-remaining"]) for r in replies[:BURST]]
    assert remaining == list(range(BURST - 1, -1, -1)), remaining
    assert "ratelimit-limit" not in (await rita.get("/v1/me")).headers
    refused = replies[-1]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == str(BURST)
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) > 0
    assert "CLINAI_RATE_LIMIT_PER_S" in refused.body["detail"]

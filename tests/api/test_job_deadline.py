"""A job's deadline through the HTTP API of real services (projector, API, builder and
one executor with a single slot): `deadline_s` (JSON or form) or `Cancel-After`, bad
values refused with the accepted range, a queued job past its deadline aborted without
running while the executor is busy (by the API's sweep), a running one canceled, one in
time unaffected; the job's events (SSE) end with the one terminal event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from events import TERMINAL_JOB_STATUSES
from tests._infra import needs_bubblewrap, wait_until
from tests.api._client import Client, Reply, new_user, ready_version
from tests.api.conftest import Stack, running_stack

MAX_DEADLINE_S = 3600


@pytest.fixture(scope="module")
def deadline_stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    needs_bubblewrap("running a version")
    env = {
        **stack_env,
        "CLINAI_RUNTIME": "process",
        "CLINAI_WORKERS_TOTAL": "1",
        "CLINAI_WORKERS_PER_VERSION": "1",
        "CLINAI_MAX_JOB_DEADLINE_S": str(MAX_DEADLINE_S),
        "CLINAI_DEADLINE_SWEEP_INTERVAL_S": "0.2",
    }
    with running_stack(env, ["projector", "api", "builder", "executor"]) as running:
        yield running


@pytest.fixture(scope="module")
def alice(deadline_stack: Stack) -> Client:
    return asyncio.run(new_user(deadline_stack.url, deadline_stack.admin_key, "alice"))


@pytest.fixture(scope="module")
def versions(alice: Client) -> dict[str, str]:
    async def build() -> dict[str, str]:
        noop, sleeper = await asyncio.gather(
            ready_version(alice, "noop"), ready_version(alice, "sleeper")
        )
        return {"noop": noop, "sleeper": sleeper}

    return asyncio.run(build())


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _submit(client: Client, version: str, headers: dict[str, str] | None = None,
                  **fields: str) -> Reply:  # fmt: skip
    return await client.upload(
        "/v1/jobs", "input", "in.txt", b"x", headers=headers, version=version, **fields
    )


async def _ended(client: Client, created: Reply, wait_s: float = 30) -> dict[str, Any]:
    """The job a submission (or a cancel) answered with, once it has ended."""
    params = {"wait": str(wait_s), "after_seq": str(created.body["seq"])}
    job = (await client.get(f"/v1/jobs/{created.body['id']}", params=params)).body
    assert job["status"] in TERMINAL_JOB_STATUSES, job
    return job  # type: ignore[no-any-return]


async def _running(client: Client, job_id: str) -> None:
    async def started() -> bool:
        return bool((await client.get(f"/v1/jobs/{job_id}")).body["status"] == "running")

    await wait_until(started, what=f"job {job_id} to start", timeout_s=60, every_s=0.05)


async def _event_types(stack: Stack, client: Client, job_id: str) -> list[tuple[str, str]]:
    """(type, actor) of the job's events, from its SSE stream (which ends after the
    terminal one)."""
    headers = {"Authorization": f"Bearer {client.key}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.url}/v1/jobs/{job_id}/events", headers=headers) as resp,
        asyncio.timeout(10),
    ):
        assert resp.status == 200
        text = await resp.text()
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], str(orjson.loads(fields["data"])["actor"])))
    return out


async def test_bad_deadlines_are_refused_with_the_accepted_range(
    alice: Client, versions: dict[str, str]
) -> None:
    noop = versions["noop"]
    json_body: dict[str, Any] = {"version": noop, "input_url": "https://example.com/x"}
    for bad in ("0", "-5", "nan", "inf", str(MAX_DEADLINE_S + 1), "1e300", "soon", "5m"):
        reply = await _submit(alice, noop, deadline_s=bad)
        assert reply.status == 422, (bad, reply.body)
        assert f"at most {MAX_DEADLINE_S}" in reply.body["detail"], reply.body
        reply = await alice.post("/v1/jobs", json={**json_body, "deadline_s": bad})
        assert reply.status == 422 and "above 0" in reply.body["detail"], (bad, reply.body)
    for bad in ("0", "-1", "soon", "5x", "1h-5m", "h", "2h"):
        reply = await _submit(alice, noop, headers={"Cancel-After": bad})
        assert reply.status == 422, (bad, reply.body)
        assert "Cancel-After" in reply.body["detail"] and "1h30m" in reply.body["detail"]
    for bad_number in (0, -1.5, MAX_DEADLINE_S * 10):
        reply = await alice.post("/v1/jobs", json={**json_body, "deadline_s": bad_number})
        assert reply.status == 422 and "deadline_s" in reply.body["detail"], reply.body
    # Both, saying different things: refused, naming both.
    reply = await _submit(alice, noop, headers={"Cancel-After": "60"}, deadline_s="30")
    assert reply.status == 422 and "Cancel-After" in reply.body["detail"], reply.body


async def test_a_job_that_ends_in_time_shows_its_deadline(
    alice: Client, versions: dict[str, str]
) -> None:
    # Cancel-After with units (as Replicate's API takes it), equal to deadline_s: taken.
    created = await _submit(
        alice, versions["noop"], headers={"Cancel-After": "1h"}, deadline_s="3600"
    )
    assert created.status == 202, created.body
    deadline = _at(created.body["deadline"])
    job = await _ended(alice, created)
    assert job["status"] == "succeeded" and _at(job["deadline"]) == deadline
    assert timedelta(minutes=59) < deadline - _at(job["created_at"]) <= timedelta(hours=1)
    without = await _submit(alice, versions["noop"])
    assert without.body["deadline"] is None
    assert (await _ended(alice, without))["deadline"] is None


async def test_a_queued_job_past_its_deadline_is_aborted_while_the_executor_is_busy(
    deadline_stack: Stack, alice: Client, versions: dict[str, str]
) -> None:
    busy = (await _submit(alice, versions["sleeper"])).body["id"]
    await _running(alice, busy)  # the one slot is taken for an hour
    waiting = await alice.post(
        "/v1/jobs",
        json={"version": versions["noop"], "input_url": "https://example.com/in.txt",
              "deadline_s": 1},
    )  # fmt: skip
    assert waiting.status == 202, waiting.body
    job = await _ended(alice, waiting)
    assert job["status"] == "aborted" and job["error_kind"] == "deadline", job
    assert job["started_at"] is None and job["finished_at"] is not None
    assert _at(job["finished_at"]) >= _at(job["deadline"])
    assert (await alice.get(f"/v1/jobs/{busy}")).body["status"] == "running"
    # Ended by the API's sweep (no executor had room), with one terminal event.
    events = await _event_types(deadline_stack, alice, waiting.body["id"])
    assert events == [("JobRequested", events[0][1]), ("JobAborted", "service:api")], events
    listed = (await alice.get("/v1/jobs", params={"status": "aborted"})).body["items"]
    assert [j["id"] for j in listed] == [waiting.body["id"]]
    canceled = await alice.post(f"/v1/jobs/{busy}/cancel")
    assert canceled.status == 202
    assert (await _ended(alice, canceled))["status"] == "canceled"


async def test_a_running_job_is_canceled_at_its_deadline(
    deadline_stack: Stack, alice: Client, versions: dict[str, str]
) -> None:
    # Time to start a worker (the slot was just freed), not to sleep an hour.
    created = await _submit(alice, versions["sleeper"], headers={"Cancel-After": "15s"})
    assert created.status == 202, created.body
    job_id = created.body["id"]
    await _running(alice, job_id)
    job = await _ended(alice, created)
    assert job["status"] == "canceled" and "deadline" in job["error_message"], job
    assert job["started_at"] is not None
    assert (
        _at(job["deadline"])
        <= _at(job["finished_at"])
        < _at(job["deadline"]) + timedelta(seconds=5)
    )
    events = await _event_types(deadline_stack, alice, job_id)
    assert [t for t, _ in events] == ["JobRequested", "JobStarted", "JobCanceled"], events


async def test_a_queued_job_past_its_deadline_is_aborted_with_no_executor_running(
    deadline_stack: Stack, alice: Client, versions: dict[str, str]
) -> None:
    """Last in this module: it stops the stack's executor."""
    executor = deadline_stack.procs[-1]
    executor.terminate()
    await asyncio.to_thread(executor.wait, 15)
    created = await _submit(alice, versions["noop"], deadline_s="0.5")
    assert created.status == 202, created.body
    job = await _ended(alice, created)
    assert job["status"] == "aborted" and job["started_at"] is None, job
    events = await _event_types(deadline_stack, alice, created.body["id"])
    assert [e for e, _ in events] == ["JobRequested", "JobAborted"], events

"""The live event stream (Server-Sent Events) over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec
import nats
import pytest

from events import (
    Event,
    EventStore,
    JobRequested,
    JobStarted,
    JobSucceeded,
    new_id,
)
from tests._events import job_requested, new_event
from tests._infra import wait_until
from tests.api._client import Client, new_user
from tests.api._raw import raw_request
from tests.api.conftest import Stack, free_port, running_stack


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    with running_stack({**stack_env, "CLINAI_SSE_HEARTBEAT_S": "0.3"}, ["projector", "api"]) as s:
        yield s


class Sse(msgspec.Struct):
    id: int | None
    event: str | None
    data: dict[str, Any] | None
    comment: str | None = None


class SseReader:
    """An open SSE response, read one message (or comment) at a time."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, timeout: float = 10.0) -> Sse:
        fields: dict[str, str] = {}
        comment = None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\n")
                if line == "":
                    if fields or comment is not None:
                        data = msgspec.json.decode(fields["data"]) if "data" in fields else None
                        ident = int(fields["id"]) if "id" in fields else None
                        return Sse(id=ident, event=fields.get("event"), data=data, comment=comment)
                    continue
                if line.startswith(":"):
                    comment = line[1:].strip()
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value

    async def events(self, n: int) -> list[Sse]:
        out: list[Sse] = []
        while len(out) < n:
            message = await self.next()
            if message.id is not None:
                out.append(message)
        return out


async def _open(
    http: aiohttp.ClientSession, stack: Stack, client: Client, path: str, **kw: Any
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {client.key}", **kw.pop("headers", {})}
    return await http.get(stack.url + path, headers=headers, **kw)


async def _append(stack: Stack, events: list[Event]) -> list[int]:
    nc = await nats.connect(stack.settings.nats_url)
    try:
        store = await EventStore.open(nc)
        return [await store.append(e, expected=None) for e in events]
    finally:
        await nc.drain()


def _requested(job_id: str, owner: str) -> JobRequested:
    return job_requested(job_id, owner)


async def _polls_waiting(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(f"{url}/readyz") as resp:
        return bool((await resp.json())["long_polls_waiting"] == 1)


async def _uid(client: Client) -> str:
    return str((await client.get("/v1/me")).body["user_id"])


async def test_resume_with_last_event_id_gives_every_event_once_in_order(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    uid, bob_id = await _uid(alice), await _uid(bob)
    job, bobs_job = new_id("job"), new_id("job")
    first = await _append(stack, [_requested(job, uid), _requested(bobs_job, bob_id)])
    start = first[0]
    batch1 = await _append(stack, [new_event(JobStarted, job, attempt=n) for n in range(1, 6)])
    await _append(stack, [new_event(JobStarted, bobs_job)])
    expected = [start, *batch1]
    async with aiohttp.ClientSession() as http:
        resp = await _open(http, stack, alice, "/v1/events", params={"from_seq": str(start)})
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        seen = await SseReader(resp).events(3)  # mid-stream: then the connection drops
        resp.close()
        batch2 = await _append(stack, [new_event(JobStarted, job, attempt=n) for n in range(6, 9)])
        expected += batch2
        resp = await _open(
            http, stack, alice, "/v1/events", headers={"Last-Event-ID": str(seen[-1].id)}
        )
        seen += await SseReader(resp).events(len(expected) - 3)
        resp.close()
    assert [m.id for m in seen] == expected  # alice's only, exactly once, in order
    assert all(m.data is not None and m.data["aggregate_id"] == job for m in seen)
    assert seen[0].event == "JobRequested" and seen[0].data is not None
    assert seen[0].data["seq"] == start


async def test_filters_heartbeats_and_no_key_hashes(stack: Stack) -> None:
    admin = Client(stack.url, stack.admin_key)
    async with aiohttp.ClientSession() as http:
        resp = await _open(http, stack, admin, "/v1/events", params={"type": "ApiKey*"})
        reader = SseReader(resp)
        first = await reader.next()
        assert first.comment == "connected"
        assert (await reader.next(timeout=5)).comment == "keep-alive"
        carol = await new_user(stack.url, stack.admin_key, "carol")
        [issued] = await reader.events(1)
        resp.close()
    assert issued.event == "ApiKeyIssued" and issued.data is not None
    assert issued.data["user_id"] == await _uid(carol)
    assert "key_hash" not in issued.data and "prefix" in issued.data


async def test_one_jobs_events_end_after_its_terminal_event(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    job = new_id("job")
    [seq] = await _append(stack, [_requested(job, await _uid(alice))])
    path = f"/v1/jobs/{job}/events"
    async with aiohttp.ClientSession() as http:
        hidden = await _open(http, stack, bob, path, params={"after_seq": str(seq)})
        assert hidden.status == 404
        resp = await _open(http, stack, alice, path, params={"after_seq": str(seq)})
        reader = SseReader(resp)
        [requested] = await reader.events(1)
        assert requested.id == seq
        more = await _append(stack, [new_event(JobStarted, job), new_event(JobSucceeded, job)])
        got = await reader.events(2)
        assert [m.id for m in got] == more
        with pytest.raises(EOFError):
            await reader.next()
        resp.close()
        done = await _open(
            http,
            stack,
            alice,
            path,
            headers={"Last-Event-ID": str(more[-1])},
            params={"after_seq": str(more[-1])},
        )
        assert done.status == 204  # tells an EventSource to stop reconnecting
        done.close()


def test_a_stop_ends_event_streams_and_answers_long_polls_at_once(
    stack_env: dict[str, str],
) -> None:
    """Open streams and polls do not hold a stop up for the server's grace time (5 s)."""
    env = {**stack_env, "CLINAI_PORT": str(free_port())}
    with running_stack(env, ["projector", "api"]) as running:
        asyncio.run(_stop_while_streaming_and_polling(running))


async def _stop_while_streaming_and_polling(running: Stack) -> None:
    alice = await new_user(running.url, running.admin_key, "alice")
    job = new_id("job")
    await _append(running, [_requested(job, await _uid(alice))])
    api = next(p for p in running.procs if p.args[-1] == "api")  # type: ignore[index]
    async with aiohttp.ClientSession() as http:
        stream = await _open(http, running, alice, "/v1/events", params={"from_seq": "1"})
        assert stream.status == 200
        poll = asyncio.ensure_future(
            _open(http, running, alice, f"/v1/jobs/{job}", params={"wait": "60"})
        )
        reader = SseReader(stream)
        await reader.next()  # the stream is open
        await wait_until(lambda: _polls_waiting(http, running.url), what="the poll to wait")
        stopped = time.monotonic()
        api.terminate()
        answered = await asyncio.wait_for(poll, 10)
        assert answered.status == 200
        assert (await answered.json())["status"] == "queued"
        with pytest.raises(EOFError):
            while True:
                await reader.next()
        await asyncio.to_thread(api.wait, 10)
        assert time.monotonic() - stopped < 3


@pytest.mark.parametrize("path", ["/v1/events", "/v1/jobs/{job}/events"])
async def test_head_on_an_event_stream_answers_its_headers_and_ends(
    stack: Stack, path: str
) -> None:
    """HEAD got the stream's headers, then the stream ran on for ever (a subscription
    held, and the connection with it: a client's next request on it hung)."""
    alice = await new_user(stack.url, stack.admin_key, "alice")
    job = new_id("job")
    [seq] = await _append(stack, [_requested(job, await _uid(alice))])
    # after_seq: the job is projected before its route looks it up (else 404, 1 run in many)
    target = f"{path.format(job=job)}?after_seq={seq}".encode()
    auth = [(b"Authorization", f"Bearer {alice.key}".encode())]
    reply = await raw_request(stack.url, "HEAD", target, headers=auth, timeout=10)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.body == b""

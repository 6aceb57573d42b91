"""A command's body that stops arriving is answered 408 after CLINAI_BODY_IDLE_TIMEOUT_S:
it held its key's slot (and so each later command of the key, while other keys work)
for as long as its connection lived. A slow body that keeps coming is not cut short."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

from tests.api._client import Client, new_user
from tests.api.conftest import Stack, running_stack

IDLE_S = 1.0


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    env = {**stack_env, "CLINAI_BODY_IDLE_TIMEOUT_S": str(IDLE_S)}
    with running_stack(env, ["projector", "api"]) as running:
        yield running


@contextlib.asynccontextmanager
async def _connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.close()


def _head(key: str, length: int) -> bytes:
    return (
        b"POST /v1/models HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (key.encode(), length)
    )


async def _busy(other: Client, stop: asyncio.Event) -> None:
    """Another key's commands, one after another: the per-key slots apply meanwhile."""
    while not stop.is_set():
        await other.post("/v1/api-keys", json={"name": "busy"})


async def test_a_stalled_body_is_408_and_frees_its_keys_slot(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "alice")
    bob = await new_user(stack.url, stack.admin_key, "bob")
    assert alice.key is not None
    stop = asyncio.Event()
    busy = asyncio.create_task(_busy(bob, stop))
    try:
        async with _connection(stack.url) as (reader, writer):
            writer.write(_head(alice.key, 100) + b'{"name": ')  # and nothing more
            await writer.drain()
            # Alice's next command waits for the stalled one's slot, then goes on.
            after = await asyncio.wait_for(
                alice.post("/v1/models", json={"name": "after"}), 10 * IDLE_S
            )
            answer = await asyncio.wait_for(reader.read(), 10 * IDLE_S)  # and closed
        assert after.status == 201, after
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"connection: close" in answer.lower()
        assert b"nothing of the request's body arrived for 1 s" in answer
    finally:
        stop.set()
        await busy


async def test_a_slow_body_that_keeps_coming_is_served(stack: Stack) -> None:
    alice = await new_user(stack.url, stack.admin_key, "carol")
    assert alice.key is not None
    body = b'{"name": "slow", "description": "' + b"x" * 8 + b'"}'
    async with _connection(stack.url) as (reader, writer):
        writer.write(_head(alice.key, len(body)))
        for byte in body:  # over 2 s in all, each byte well within the idle time
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(IDLE_S / 10)  # the client's pace, not synchronisation
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10 * IDLE_S)
    assert answer.startswith(b"HTTP/1.1 201 "), answer

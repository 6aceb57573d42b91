"""A command whose event would be larger than the NATS server takes is a 413 that says
what to do, not a 500 (here the server takes 4 KiB messages)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._small_nats import small_nats
from tests.api._client import Client
from tests.api.conftest import Stack, running_stack


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with small_nats(tmp_path_factory.mktemp("small-nats"), 4096) as url:
        env = {**stack_env, "CLINAI_NATS_URL": url}
        with running_stack(env, ["projector", "api"]) as running:
            yield running


async def test_an_event_larger_than_the_server_takes_is_a_413(stack: Stack) -> None:
    admin = Client(stack.url, stack.admin_key)
    reply = await admin.post("/v1/models", json={"name": "big", "description": "d" * 9000})
    assert reply.status == 413, reply.body
    assert "more than the event log takes" in reply.body["detail"]
    # Nothing was recorded: the name is still free.
    again = await admin.post("/v1/models", json={"name": "big", "description": "short"})
    assert again.status == 201, again.body

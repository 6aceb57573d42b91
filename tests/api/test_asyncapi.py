"""`GET /asyncapi.json` over real HTTP: the stream's AsyncAPI document (its content is
tested in tests/events/test_asyncapi.py), for authenticated callers only."""

from __future__ import annotations

from events.asyncapi import catalogue_types
from tests.api._client import Client, new_user
from tests.api.conftest import Stack


async def test_served_to_a_caller_with_a_key_and_refused_without(stack: Stack) -> None:
    anon = await Client(stack.url, None).get("/asyncapi.json")
    assert anon.status == 401
    assert anon.headers["content-type"] == "application/problem+json"
    assert "Authorization: Bearer" in anon.body["detail"]

    user = await new_user(stack.url, stack.admin_key, "reader")  # not only admins
    reply = await user.get("/asyncapi.json")
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    doc = reply.body
    assert doc["asyncapi"] == "3.0.0"
    assert f"`{stack.settings.stream_name}`" in doc["info"]["description"]
    names = {cls.__name__ for cls in catalogue_types()}
    assert set(doc["components"]["messages"]) == names
    assert names <= set(doc["components"]["schemas"])

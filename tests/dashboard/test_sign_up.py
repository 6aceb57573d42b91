"""CLINAI_OPEN_SIGNUP=1: anyone makes an account at /sign-up, with a password; a name
someone can already sign in with is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.api.conftest import Stack, running_stack
from tests.dashboard._person import Person

PASSWORD = "a sign-up password"


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    with running_stack({**stack_env, "CLINAI_OPEN_SIGNUP": "1"}, ["projector", "api"]) as s:
        yield s


async def test_anyone_signs_up_once_per_name(stack: Stack) -> None:
    name = f"newcomer-{uuid.uuid4().hex[:6]}"
    async with Person(stack.url) as newcomer:
        status, text, _ = await newcomer.page("/sign-in")
        assert 'href="/sign-up"' in text
        status, _, headers = await newcomer.form("/sign-up", {"name": name, "password": PASSWORD})
        assert status == 303 and headers["location"] == "/models"
        await newcomer.page("/models")
        me = await newcomer.api("GET", "/v1/me")
        assert me.status == 200 and me.body["is_admin"] is False
        # No API key was made for them; they make their own on the keys page.
        keys = await newcomer.api("GET", "/v1/api-keys")
        assert keys.body["items"] == []
    async with Person(stack.url) as copycat:
        status, text, _ = await copycat.form(
            "/sign-up", {"name": name.upper(), "password": PASSWORD}
        )
        assert status == 422 and "can already sign in" in text
        status, text, _ = await copycat.form("/sign-up", {"name": "shorty", "password": "short"})
        assert status == 422 and "shorter than 10 characters" in text
    async with Person(stack.url) as again:
        assert await again.sign_in(name, PASSWORD) == 303

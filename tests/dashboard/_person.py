"""A person in a browser, as far as HTTP goes: a cookie jar, the dashboard's forms (with
their CSRF tokens) and the JSON API called with the session."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import aiohttp

from tests.api._client import Client, Reply

_HIDDEN = re.compile(r'name="csrf_token" value="([^"]*)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


async def create_user(
    url: str, admin_key: str, name: str, password: str, email: str | None = None
) -> str:
    """A user who can sign in, created by the admin; their id, once the read models
    have it (a session is found through them)."""
    admin = Client(url, admin_key)
    body = {"name": name, "password": password}
    reply = await admin.post("/v1/users", json=body if email is None else {**body, "email": email})
    if reply.status != 201:
        raise AssertionError(f"could not create user: {reply.status} {reply.body}")
    await admin.get("/v1/me", params={"after_seq": str(reply.body["seq"])})
    return str(reply.body["id"])


class Person:
    def __init__(self, url: str, *, address: str | None = None) -> None:
        self.url = url
        self.csrf = ""
        # The API trusts X-Forwarded-For from 127.0.0.1 (uvicorn's default, for a proxy on
        # the host): each test signs in "from" its own address.
        headers = {} if address is None else {"X-Forwarded-For": address}
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers
        )

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> Person:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def page(self, path: str) -> tuple[int, str, dict[str, str]]:
        async with self.http.get(self.url + path, allow_redirects=False) as resp:
            text = await resp.text()
            if (meta := _META.search(text)) is not None:
                self.csrf = html.unescape(meta.group(1))
            return resp.status, text, {k.lower(): v for k, v in resp.headers.items()}

    async def form(
        self, path: str, fields: dict[str, str], *, token: str | None = None
    ) -> tuple[int, str, dict[str, str]]:
        """Post `fields` to the form at `path` with the token the page gave (or `token`)."""
        if token is None:
            _, text, _ = await self.page(path)
            found = _HIDDEN.search(text)
            token = html.unescape(found.group(1)) if found else ""
        data = {"csrf_token": token, **fields}
        async with self.http.post(self.url + path, data=data, allow_redirects=False) as resp:
            return resp.status, await resp.text(), {k.lower(): v for k, v in resp.headers.items()}

    async def sign_in(self, name: str, password: str) -> int:
        status, _, headers = await self.form("/sign-in", {"name": name, "password": password})
        if status == 303:
            await self.page(headers["location"])  # the page's CSRF token
        return status

    async def api(
        self, method: str, path: str, *, json: Any = None, csrf: str | None = None
    ) -> Reply:
        headers = {"X-CSRF-Token": self.csrf if csrf is None else csrf}
        async with self.http.request(method, self.url + path, json=json, headers=headers) as resp:
            raw = await resp.read()
            body: Any = raw
            if resp.content_type in ("application/json", "application/problem+json"):
                body = await resp.json(content_type=None)
            return Reply(status=resp.status, body=body, headers=dict(resp.headers))


async def gather_close(*people: Person) -> None:
    await asyncio.gather(*(p.close() for p in people))

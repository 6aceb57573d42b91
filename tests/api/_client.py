"""A thin HTTP client for the tests: one aiohttp session per caller."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from services.packages import zip_folder
from tests._infra import wait_until

EXAMPLE_MODEL = Path(__file__).resolve().parents[2] / "example-model"
PACKAGES = Path(__file__).resolve().parents[1] / "packages"


class Reply(msgspec.Struct):
    status: int
    body: Any
    headers: dict[str, str]


class Client:
    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url
        self.key = key

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        headers.update(extra or {})
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method,
                self.base_url + path,
                json=json,
                data=data,
                headers=self._headers(headers),
                params=params,
                # Like curl for large bodies: a refusal (413) comes before the body is sent.
                expect100=data is not None and not isinstance(data, dict),
            ) as resp,
        ):
            raw = await resp.read()
            body: Any
            if resp.content_type in ("application/json", "application/problem+json"):
                body = msgspec.json.decode(raw)
            else:
                body = raw
            return Reply(
                status=resp.status,
                body=body,
                headers={k.lower(): v for k, v in resp.headers.items()},
            )

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Reply:
        return await self.request("POST", path, **kw)

    async def upload(
        self,
        path: str,
        field: str,
        name: str,
        content: bytes,
        headers: dict[str, str] | None = None,
        **fields: str,
    ) -> Reply:
        form = aiohttp.FormData()
        for key, value in fields.items():
            form.add_field(key, value)
        form.add_field(field, io.BytesIO(content), filename=name)
        return await self.request("POST", path, data=form, headers=headers)


async def new_user(base_url: str, admin_key: str, name: str) -> Client:
    reply = await Client(base_url, admin_key).post("/v1/users", json={"name": name})
    if reply.status != 201:
        raise AssertionError(f"could not create user: {reply.status} {reply.body}")
    client = Client(base_url, reply.body["api_key"]["secret"])
    # The key authenticates once the projection has it; wait for that with a deadline.
    deadline = asyncio.get_running_loop().time() + 10
    while (await client.get("/v1/me")).status != 200:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("a new user's key never became usable")
    return client


async def ready_version(client: Client, package: str, timeout_s: float = 240.0) -> str:
    """The id of a version of `tests/packages/<package>` uploaded by `client`, once a
    builder has built it (fails if the build fails or takes longer than `timeout_s`)."""
    name = f"m-{package.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    model = (await client.post("/v1/models", json={"name": name})).body
    reply = await client.upload(
        f"/v1/models/{model['id']}/versions", "package", "p.zip", zip_folder(PACKAGES / package)
    )
    if reply.status != 201:
        raise AssertionError(f"upload refused: {reply.status} {reply.body}")
    version_id = str(reply.body["id"])

    async def built() -> bool:
        version = (await client.get(f"/v1/versions/{version_id}")).body
        if version["status"] == "failed":
            raise AssertionError(f"version {version_id} not built: {version}")
        return bool(version["status"] == "ready")

    await wait_until(built, what=f"{package} to be built", timeout_s=timeout_s, every_s=0.2)
    return version_id


async def only_output(job: dict[str, Any]) -> bytes:
    """The bytes of a job's one output file, downloaded from its URL."""
    [output] = job["outputs"]
    async with aiohttp.ClientSession() as http, http.get(output["url"]) as resp:
        assert resp.status == 200
        return await resp.read()

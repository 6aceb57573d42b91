"""What the user names on the command line, as the API's resources: a model by id
(`mdl_...`) or by name (yours first, then a public one), a version by id (`ver_...`)
or as a model's latest ready version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.cli._client import Api
from services.cli._errors import CliError

__all__ = ["all_items", "find_model", "model_named", "runnable_version"]


async def all_items(api: Api, path: str, **params: str) -> AsyncIterator[dict[str, Any]]:
    """Every item of a paginated list (`next_cursor`)."""
    cursor = ""
    while True:
        query = {**params, "limit": "200"} | ({"cursor": cursor} if cursor else {})
        page = await api.get(path, **query)
        for item in page["items"]:
            yield item
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return


async def find_model(api: Api, ref: str, *, own: bool = False) -> dict[str, Any] | None:
    """The model `ref` names (an id, or a name: the caller's own first, or with `own`
    only theirs), or None."""
    if ref.startswith("mdl_"):
        model: dict[str, Any] = await api.get(f"/v1/models/{ref}")
        return model
    me = (await api.get("/v1/me"))["user_id"]
    found = [m async for m in all_items(api, "/v1/models") if m["name"] == ref]
    found = [m for m in found if m["owner"] == me] + ([] if own else found)
    return found[0] if found else None


async def model_named(api: Api, ref: str) -> dict[str, Any]:
    model = await find_model(api, ref)
    if model is None:
        raise CliError(f"no model named {ref!r}: list yours with `clinai models`")
    return model


async def runnable_version(api: Api, ref: str) -> dict[str, Any]:
    """The version `ref` names, or its model's latest ready one."""
    if ref.startswith("ver_"):
        version: dict[str, Any] = await api.get(f"/v1/versions/{ref}")
        return version
    model = await model_named(api, ref)
    versions = (await api.get(f"/v1/models/{model['id']}/versions"))["items"]
    ready = [v for v in versions if v["status"] == "ready"]
    if not ready:
        raise CliError(
            f"model {model['name']} has no ready version: push one with "
            f"`clinai push FOLDER --model {model['name']}`"
        )
    return max(ready, key=lambda v: v["number"])

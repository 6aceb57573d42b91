"""Users and API keys. Secrets are shown once, in the response that creates them."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from projections import queries
from services.api import replies
from services.api.openapi_spec import Operation, Reply, path_param
from services.api.routes_accounts import Email, Password, check_email_free, check_name_free
from services.api.wiring import (
    checked_id,
    decode_body,
    json_response,
    path_id,
    services,
)
from services.domain.views import projected_view

__all__ = ["operations", "routes"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class CreateUserBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    is_admin: bool = False
    password: Password | None = None  # to sign in to the dashboard (only its hash is kept)
    email: Email | None = None  # to sign in with instead of the name; unique, any case


class CreateKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name = "default"
    user_id: str | None = None  # admins may issue keys for another user


async def create_user(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    body = await decode_body(request, CreateUserBody)
    if body.password is not None:
        await check_name_free(svc, body.name)
    if body.email is not None:
        await check_email_free(svc, body.email)
    user_id, key = await svc.commands.create_user(
        svc.context(request, caller),
        name=body.name,
        is_admin=body.is_admin,
        password=body.password,
        email=body.email,
    )
    return json_response(
        replies.CreatedUser(
            id=user_id,
            name=body.name,
            email=body.email,
            is_admin=body.is_admin,
            api_key=replies.KeySecret(id=key.key_id, secret=key.secret),
        ),
        201,
        seq=key.seq,
    )


async def me(request: Request) -> Response:
    caller = await services(request).caller(request)
    return json_response(
        replies.Me(user_id=caller.user_id, key_id=caller.key_id, is_admin=caller.is_admin)
    )


async def create_key(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    body = await decode_body(request, CreateKeyBody)
    user_id = caller.user_id if body.user_id is None else checked_id(body.user_id, "user")
    key = await svc.commands.issue_api_key(
        svc.context(request, caller), user_id=user_id, name=body.name
    )
    return json_response(
        replies.CreatedKey(id=key.key_id, name=body.name, secret=key.secret), 201, seq=key.seq
    )


async def list_keys(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    keys = await queries.list_api_keys(svc.pool, caller.user_id)
    return json_response(
        replies.ApiKeyList(items=[projected_view(k, replies.ApiKey) for k in keys])
    )


async def revoke_key(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    key_id = path_id(request, "key_id")
    seq = await svc.commands.revoke_api_key(svc.context(request, caller), key_id)
    return json_response(replies.Accepted(id=key_id, status="revoked"), 202, seq=seq)


routes = [
    Route("/v1/users", create_user, methods=["POST"]),
    Route("/v1/me", me, methods=["GET"]),
    Route("/v1/api-keys", create_key, methods=["POST"]),
    Route("/v1/api-keys", list_keys, methods=["GET"]),
    Route("/v1/api-keys/{key_id}", revoke_key, methods=["DELETE"]),
]

_TAG = "users and keys"

operations = [
    Operation(
        method="POST",
        path="/v1/users",
        name="create_user",
        summary="Create a user (admins), with a first API key",
        tag=_TAG,
        body=CreateUserBody,
        command=True,
        problems=(403, 409),
        replies={
            201: Reply(
                description="Created; the key's secret is shown once", type=replies.CreatedUser
            )
        },
    ),
    Operation(
        method="GET",
        path="/v1/me",
        name="me",
        summary="Who the API key belongs to",
        tag=_TAG,
        replies={200: Reply(description="The caller", type=replies.Me)},
    ),
    Operation(
        method="POST",
        path="/v1/api-keys",
        name="create_key",
        summary="Issue an API key (admins may issue one for another user)",
        tag=_TAG,
        body=CreateKeyBody,
        body_required=False,
        command=True,
        problems=(403, 404, 409),
        replies={
            201: Reply(description="Issued; the secret is shown once", type=replies.CreatedKey)
        },
    ),
    Operation(
        method="GET",
        path="/v1/api-keys",
        name="list_keys",
        summary="The caller's API keys (without secrets)",
        tag=_TAG,
        replies={200: Reply(description="The keys", type=replies.ApiKeyList)},
    ),
    Operation(
        method="DELETE",
        path="/v1/api-keys/{key_id}",
        name="revoke_key",
        summary="Revoke an API key",
        tag=_TAG,
        params=(path_param("key_id", "API key"),),
        command=True,
        problems=(403, 409),
        replies={202: Reply(description="Revoked", type=replies.Accepted)},
    ),
]

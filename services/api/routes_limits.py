"""A user's job limits: an admin sets them (`PUT`); the user or an admin reads them
(`GET`), with the limits in force (their own, else the operator's defaults)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from projections.limit_queries import get_user_limits
from services.api import replies
from services.api.openapi_spec import Operation, Reply, path_param
from services.api.problems import ApiError
from services.api.wiring import decode_body, json_response, path_id, services
from services.domain.access import can_see_user
from services.domain.limits import MAX_LIMIT, UserLimits, effective_limits, set_user_limits
from services.domain.views import projected_view
from services.settings import Settings

__all__ = ["operations", "routes"]

Limit = Annotated[int, msgspec.Meta(ge=0, le=MAX_LIMIT)]


class LimitsBody(msgspec.Struct, forbid_unknown_fields=True):
    """null (or absent): the operator's default."""

    max_queued_jobs: Limit | None = None
    max_running_jobs: Limit | None = None


def _view(user_id: str, own: UserLimits, settings: Settings) -> replies.Limits:
    return replies.Limits(
        user_id=user_id,
        own=projected_view(own, replies.LimitValues),
        in_force=projected_view(effective_limits(settings, own), replies.LimitValues),
    )


async def set_limits(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    body = await decode_body(request, LimitsBody)
    user_id = path_id(request, "user_id")
    own = UserLimits(max_queued_jobs=body.max_queued_jobs, max_running_jobs=body.max_running_jobs)
    seq = await set_user_limits(svc.store, svc.context(request, caller), user_id, own)
    return json_response(_view(user_id, own, svc.settings), seq=seq)


async def get_limits(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    user_id = path_id(request, "user_id")
    found = await get_user_limits(svc.pool, user_id)
    if found is None or not can_see_user(user_id, caller.user_id, caller.is_admin):
        raise ApiError(404, "Not found", f"user {user_id} not found; check the user id")
    own = UserLimits(max_queued_jobs=found.max_queued_jobs, max_running_jobs=found.max_running_jobs)
    return json_response(_view(user_id, own, svc.settings))


routes = [
    Route("/v1/users/{user_id}/limits", set_limits, methods=["PUT"]),
    Route("/v1/users/{user_id}/limits", get_limits, methods=["GET"]),
]

_USER_ID = path_param("user_id", "user")
_TAG = "users and keys"

operations = [
    Operation(
        method="PUT",
        path="/v1/users/{user_id}/limits",
        name="set_limits",
        summary="Set a user's job limits (admins)",
        tag=_TAG,
        params=(_USER_ID,),
        body=LimitsBody,
        command=True,
        problems=(403, 409),
        replies={200: Reply(description="The limits", type=replies.Limits)},
    ),
    Operation(
        method="GET",
        path="/v1/users/{user_id}/limits",
        name="get_limits",
        summary="A user's job limits, and those in force",
        tag=_TAG,
        params=(_USER_ID,),
        replies={200: Reply(description="The limits", type=replies.Limits)},
    ),
]

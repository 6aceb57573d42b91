"""Sign-in accounts over the JSON API: an admin lists users, sets a user's password and
invites a user to set their own (a link, shown once); a user changes their own password
(with the current one). Setting a password ends the user's other dashboard sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from projections import account_queries
from services.api.auth import Principal
from services.api.openapi_spec import Operation, Reply, path_param
from services.api.problems import ApiError
from services.api.wiring import ApiServices, decode_body, json_response, path_id, services
from services.domain.accounts import INVITATION_TTL_S
from services.domain.passwords import MAX_PASSWORD_LENGTH, verify_in_thread

__all__ = [
    "Email",
    "Password",
    "check_current_password",
    "check_email_free",
    "check_name_free",
    "client_address",
    "invitation_url",
    "operations",
    "routes",
]

Password = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
# An e-mail address, only as far as a sign-in needs one: one @, no spaces, a dot after.
Email = Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    password: Password
    current_password: Password | None = None  # needed to change your own (not an admin)


class InvitationBody(msgspec.Struct, forbid_unknown_fields=True):
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 24 * 3600)] = INVITATION_TTL_S


def client_address(request: Request) -> str:
    """The client's address, as failed sign-ins are counted by (behind a proxy on the
    host, the one X-Forwarded-For names: uvicorn trusts it from 127.0.0.1)."""
    return request.client.host if request.client is not None else "unknown"


async def check_name_free(svc: ApiServices, name: str) -> None:
    """People sign in by name: a name another user with a password has is refused."""
    if await account_queries.find_sign_in(svc.pool, name):
        raise ApiError(
            409, "Name taken", f"a user named {name!r} can already sign in; choose another name"
        )


async def check_email_free(svc: ApiServices, email: str) -> None:
    """People sign in by e-mail too: one that any user has (or that is the name of a
    user who can sign in) is refused, in any case."""
    if await account_queries.identifier_taken(svc.pool, email):
        raise ApiError(
            409, "E-mail taken", f"{email!r} already names a user; give another e-mail address"
        )


def invitation_url(svc: ApiServices, token: str) -> str:
    # The token rides in the fragment: browsers never send it, so no log has it.
    return f"{svc.settings.api_url}/invitation#{token}"


async def end_other_sessions(svc: ApiServices, user_id: str, caller: Principal) -> int:
    """After a password is set: the user's sessions end, but the caller's own."""
    return await svc.sessions.end_others(user_id, keep=caller.key_id)


async def list_users(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    if not caller.is_admin:
        raise ApiError(403, "Forbidden", "only an admin can list users")
    users = await account_queries.list_users(svc.pool)
    return json_response({"items": [msgspec.to_builtins(u) for u in users]})


async def set_password(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    user_id = path_id(request, "user_id")  # a malformed id is refused before the body
    body = await decode_body(request, PasswordBody)
    if not caller.is_admin:
        if user_id != caller.user_id:
            raise ApiError(403, "Forbidden", "only an admin sets other users' passwords")
        await check_current_password(request, svc, user_id, body.current_password or "")
    seq = await svc.commands.set_password(svc.context(request, caller), user_id, body.password)
    ended = await end_other_sessions(svc, user_id, caller)
    return json_response({"id": user_id, "sessions_ended": ended}, 202, seq=seq)


async def check_current_password(
    request: Request, svc: ApiServices, user_id: str, current: str
) -> None:
    """A user changing their own password proves they know the current one: else 403;
    wrong guesses are limited as failed sign-ins are (per user and per address: 429)."""
    address = client_address(request)
    throttle = svc.sign_in_throttle
    wait = await throttle.retry_after(user_id, address)
    if wait is not None:
        raise ApiError(
            429,
            "Too many wrong passwords",
            f"too many wrong current passwords: retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    if not await verify_in_thread(await account_queries.get_sign_in(svc.pool, user_id), current):
        await throttle.failed(user_id, address)
        raise ApiError(
            403,
            "Wrong password",
            "the current password is wrong: send your current one as current_password",
        )


async def invite(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    user_id = path_id(request, "user_id")
    body = await decode_body(request, InvitationBody)
    invitation = await svc.commands.invite(svc.context(request, caller), user_id, ttl_s=body.ttl_s)
    return json_response(
        {
            "user_id": user_id,
            "url": invitation_url(svc, invitation.token),
            "expires_at": invitation.expires_at,
        },
        201,
        seq=invitation.seq,
    )


class UserList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[account_queries.UserView]


class PasswordSet(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    sessions_ended: int  # the user's dashboard sessions ended (all but the caller's)
    seq: int


class InvitationMade(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    url: str  # shown once; the token rides in the fragment
    expires_at: datetime
    seq: int


routes = [
    Route("/v1/users", list_users, methods=["GET"]),
    Route("/v1/users/{user_id}/password", set_password, methods=["PUT"]),
    Route("/v1/users/{user_id}/invitations", invite, methods=["POST"]),
]

_USER_ID = path_param("user_id", "user")
_TAG = "users and keys"

operations = [
    Operation(
        method="GET",
        path="/v1/users",
        name="list_users",
        summary="The users, newest first (admins)",
        tag=_TAG,
        problems=(403,),
        replies={200: Reply(description="The users", type=UserList)},
    ),
    Operation(
        method="PUT",
        path="/v1/users/{user_id}/password",
        name="set_password",
        summary="Set a user's dashboard password",
        description="An admin sets any user's; a user changes their own with "
        "`current_password` (wrong guesses are limited as failed sign-ins are). The "
        "user's other dashboard sessions end.",
        tag=_TAG,
        params=(_USER_ID,),
        body=PasswordBody,
        command=True,
        problems=(403, 404, 429),
        replies={202: Reply(description="The password is set", type=PasswordSet)},
    ),
    Operation(
        method="POST",
        path="/v1/users/{user_id}/invitations",
        name="invite_user",
        summary="A link where the user sets their password (admins)",
        tag=_TAG,
        params=(_USER_ID,),
        body=InvitationBody,
        body_required=False,
        command=True,
        problems=(403, 404),
        replies={201: Reply(description="The invitation (shown once)", type=InvitationMade)},
    ),
]

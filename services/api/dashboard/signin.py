"""Signing in and out, signing up (when the operator allows it), accepting an invitation
and changing one's password: HTML forms posted to the API.

The forms shown before a session exists carry a token that must match a cookie set with
the form (double submit, SameSite=Strict), so another site cannot sign a browser in to
an account of its choosing; the others carry the session's CSRF token."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from projections import account_queries
from services.api.dashboard._render import Pages, secure_cookies, signed_in
from services.api.problems import ApiError
from services.api.routes_accounts import (
    check_current_password,
    check_name_free,
    client_address,
)
from services.api.sessions import COOKIE, Session
from services.api.wiring import ApiServices, services
from services.domain import CommandContext, CommandError
from services.domain.passwords import verify_in_thread

__all__ = ["sign_in_routes"]

_FORM_COOKIE = "clinai_form"
_WRONG = "The user name, e-mail or password is wrong."


def _form_token(request: Request) -> str:
    return request.cookies.get(_FORM_COOKIE) or secrets.token_urlsafe(24)


def _with_form_cookie(request: Request, response: Response, token: str) -> Response:
    response.set_cookie(
        _FORM_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        path="/",
    )
    return response


async def _form(request: Request, expected: str | None) -> FormData:
    """The posted form, once its CSRF token matches `expected` (the session's) or, with
    None, the form cookie; else 403."""
    form = await request.form(max_files=0, max_fields=20, max_part_size=64 * 1024)
    sent = str(form.get("csrf_token") or "")
    want = expected if expected is not None else request.cookies.get(_FORM_COOKIE, "")
    if not want or not hmac.compare_digest(sent, want):
        raise ApiError(
            403,
            "CSRF token missing or wrong",
            "this form's CSRF token is missing or stale: reload the page and submit again",
        )
    return form


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this site only."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/models"
    return value


async def _start_session(request: Request, svc: ApiServices, user_id: str, to: str) -> Response:
    token = await svc.sessions.create(user_id)
    response = RedirectResponse(to, status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="lax", secure=secure_cookies(request), path="/"
    )
    return response


class SignIn:
    def __init__(self, pages: Pages) -> None:
        self._pages = pages

    def _anonymous(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        token = _form_token(request)
        response = self._pages.render(
            request, name, {"form_token": token, **context}, session=None, status=status
        )
        return _with_form_cookie(request, response, token)

    async def root(self, request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        session = None if not token else await services(request).sessions.find(token)
        return RedirectResponse("/models" if session else "/sign-in", status_code=303)

    async def sign_in_page(self, request: Request) -> Response:
        svc = services(request)
        return self._anonymous(
            request,
            "sign_in.html",
            {
                "next": _safe_next(request.query_params.get("next")),
                "signup": svc.settings.open_signup,
            },
        )

    async def sign_in(self, request: Request) -> Response:
        svc = services(request)
        form = await _form(request, None)
        name, password = _text(form, "name").strip(), _text(form, "password")
        next_path = _safe_next(_text(form, "next"))
        context: dict[str, Any] = {
            "next": next_path,
            "name": name,
            "signup": svc.settings.open_signup,
        }
        throttle = svc.sign_in_throttle
        wait = await throttle.retry_after(name, client_address(request))
        if wait is not None:
            minutes = max(1, round(wait / 60))
            context["error"] = (
                f"Too many failed sign-ins for this name or from this address: "
                f"try again in about {minutes} minute{'s' if minutes > 1 else ''}."
            )
            response = self._anonymous(request, "sign_in.html", context, 429)
            response.headers["Retry-After"] = str(wait)
            return response
        found = await account_queries.find_sign_in(svc.pool, name) if name else []
        user = found[0] if len(found) == 1 else None
        matched = await verify_in_thread(user.password_hash if user else None, password)
        # The user's name and e-mail count as one account, whichever was typed.
        aliases = [] if user is None else [user.name, *([user.email] if user.email else [])]
        if user is None or not matched:  # the same answer, after the same work, either way
            await throttle.failed(name, client_address(request), aliases)
            return self._anonymous(request, "sign_in.html", {**context, "error": _WRONG}, 401)
        await throttle.succeeded(name, aliases)
        return await _start_session(request, svc, user.id, next_path)

    async def sign_out(self, request: Request) -> Response:
        svc = services(request)
        token = request.cookies.get(COOKIE)
        session = None if not token else await svc.sessions.find(token)
        if token and session is not None:
            await _form(request, session.csrf)
            await svc.sessions.end(token)
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def sign_up_page(self, request: Request) -> Response:
        if not services(request).settings.open_signup:
            raise ApiError(404, "Not found", "sign-up is off here: ask an admin for an account")
        return self._anonymous(request, "sign_up.html", {})

    async def sign_up(self, request: Request) -> Response:
        svc = services(request)
        if not svc.settings.open_signup:
            raise ApiError(404, "Not found", "sign-up is off here: ask an admin for an account")
        form = await _form(request, None)
        name = _text(form, "name").strip()
        context: dict[str, Any] = {"name": name}
        if not 1 <= len(name) <= 100:
            context["error"] = "A user name has 1 to 100 characters."
            return self._anonymous(request, "sign_up.html", context, 422)
        try:
            await check_name_free(svc, name)
            user_id, seq = await svc.commands.sign_up(
                name=name, password=_text(form, "password"), correlation_id=secrets.token_hex(8)
            )
        except (ApiError, CommandError) as err:
            context["error"] = str(err.detail if isinstance(err, ApiError) else err)
            return self._anonymous(request, "sign_up.html", context, 422)
        # A session is found through the read models' user: wait until they have it.
        await svc.watermark.wait_for(seq, svc.settings.read_your_writes_timeout_s)
        return await _start_session(request, svc, user_id, "/models")

    async def invitation_page(self, request: Request) -> Response:
        return self._anonymous(request, "invitation.html", {})

    async def accept_invitation(self, request: Request) -> Response:
        svc = services(request)
        form = await _form(request, None)
        try:
            user_id, seq = await svc.commands.accept_invitation(
                _text(form, "token"), _text(form, "password"), correlation_id=secrets.token_hex(8)
            )
        except CommandError as err:
            return self._anonymous(request, "invitation.html", {"error": str(err)}, 400)
        await svc.sessions.end_others(user_id)  # a reset ends every earlier session
        await svc.watermark.wait_for(seq, svc.settings.read_your_writes_timeout_s)
        return await _start_session(request, svc, user_id, "/models")

    async def account_page(self, request: Request, session: Session) -> Response:
        return self._pages.render(request, "account.html", {}, session=session)

    async def change_password(self, request: Request, session: Session) -> Response:
        svc = services(request)
        form = await _form(request, session.csrf)
        try:
            await check_current_password(
                request, svc, session.user_id, _text(form, "current_password")
            )
            ctx = CommandContext(
                actor=session.user_id,
                is_admin=session.is_admin,
                correlation_id=secrets.token_hex(8),
            )
            seq = await svc.commands.set_password(ctx, session.user_id, _text(form, "password"))
            # Once the read models have it, the old password no longer signs in.
            await svc.watermark.wait_for(seq, svc.settings.read_your_writes_timeout_s)
        except (ApiError, CommandError) as err:
            status = err.status if isinstance(err, ApiError) else 400
            detail = err.detail if isinstance(err, ApiError) else str(err)
            return self._pages.render(
                request, "account.html", {"error": detail}, session=session, status=status
            )
        ended = await svc.sessions.end_others(session.user_id, keep=session.id)
        return self._pages.render(
            request, "account.html", {"changed": True, "ended": ended}, session=session
        )


def sign_in_routes(pages: Pages) -> list[BaseRoute]:
    views = SignIn(pages)
    return [
        Route("/", views.root, methods=["GET"]),
        Route("/sign-in", views.sign_in_page, methods=["GET"]),
        Route("/sign-in", views.sign_in, methods=["POST"]),
        Route("/sign-out", views.sign_out, methods=["POST"]),
        Route("/sign-up", views.sign_up_page, methods=["GET"]),
        Route("/sign-up", views.sign_up, methods=["POST"]),
        Route("/invitation", views.invitation_page, methods=["GET"]),
        Route("/invitation", views.accept_invitation, methods=["POST"]),
        Route("/account", signed_in(views.account_page), methods=["GET"]),
        Route("/account", signed_in(views.change_password), methods=["POST"]),
    ]

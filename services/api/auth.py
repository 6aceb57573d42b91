"""Who calls: a program with a bearer API key (`Authorization: Bearer <key>`, looked up by
its SHA-256), or a person signed in to the dashboard (the session cookie, when no
Authorization header is sent; a command must then carry the session's CSRF token in
`X-CSRF-Token`)."""

from __future__ import annotations

import hmac
import time

import asyncpg
import msgspec
from starlette.requests import Request

from projections import queries
from services.api.problems import ApiError
from services.api.sessions import COOKIE, CSRF_HEADER, SessionStore
from services.domain import hash_api_key

__all__ = ["KeyCache", "Principal", "authenticate"]

_CACHE_SECONDS = 2.0  # a revoked key stops working within this long


class Principal(msgspec.Struct, frozen=True):
    user_id: str
    key_id: str
    is_admin: bool


class KeyCache:
    """A short cache of key lookups so a busy client costs one query per few seconds."""

    def __init__(self, pool: asyncpg.Pool, *, ttl: float = _CACHE_SECONDS) -> None:
        self._pool = pool
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    async def lookup(self, key_hash: str) -> Principal | None:
        now = time.monotonic()
        hit = self._entries.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await queries.find_api_key_by_hash(self._pool, key_hash)
        principal = (
            Principal(
                user_id=key.user_id, key_id=key.id, is_admin=key.is_admin or key.user_is_admin
            )
            if key is not None and key.revoked_at is None
            else None
        )
        if principal is not None:  # unknown keys are not cached: a new key works at once
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key_hash] = (now + self._ttl, principal)
        return principal


_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="clinai"'}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authenticate(
    request: Request, cache: KeyCache, sessions: SessionStore | None = None
) -> Principal:
    header = request.headers.get("authorization", "")
    if not header and sessions is not None and (token := request.cookies.get(COOKIE)):
        return await _session_principal(request, sessions, token)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "Unauthorized",
            "this endpoint needs an API key: send `Authorization: Bearer <key>` "
            "(`clinai up` prints an admin key on first start)",
            headers=_UNAUTHORIZED_HEADERS,
        )
    principal = await cache.lookup(hash_api_key(token.strip()))
    if principal is None:
        raise ApiError(
            401,
            "Unauthorized",
            "the API key is unknown or revoked: check it, or ask an admin for a new one",
            headers=_UNAUTHORIZED_HEADERS,
        )
    return principal


async def _session_principal(request: Request, sessions: SessionStore, token: str) -> Principal:
    session = await sessions.find(token)
    if session is None:
        raise ApiError(
            401,
            "Unauthorized",
            "your session has ended (signed out, idle too long, or the password changed): "
            "sign in again, or send an API key as `Authorization: Bearer <key>`",
            headers=_UNAUTHORIZED_HEADERS,
        )
    if request.method not in _SAFE_METHODS and not hmac.compare_digest(
        request.headers.get(CSRF_HEADER, ""), session.csrf
    ):
        raise ApiError(
            403,
            "CSRF token missing or wrong",
            "a command from a signed-in session must carry the page's CSRF token in the "
            "X-CSRF-Token header: reload the page and retry",
        )
    return Principal(user_id=session.user_id, key_id=session.id, is_admin=session.is_admin)

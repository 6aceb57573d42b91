"""The read side of accounts: users by name for sign-in (with the password hash, which
never leaves the API), a user, and the users an admin lists."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

__all__ = [
    "SignInCandidate",
    "UserView",
    "find_sign_in",
    "get_sign_in",
    "get_user",
    "identifier_taken",
    "list_users",
]


class UserView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    email: str | None
    is_admin: bool
    created_at: datetime
    has_password: bool


class SignInCandidate(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    email: str | None
    is_admin: bool
    password_hash: str


_USER_COLUMNS = "id, name, email, is_admin, created_at, password_hash IS NOT NULL AS has_password"


async def find_sign_in(db: Any, name: str) -> list[SignInCandidate]:
    """The users with a password whose name or e-mail is `name`, in any case (more than
    one: it does not tell them apart, and nobody signs in with it)."""
    rows = await db.fetch(
        "SELECT id, name, email, is_admin, password_hash FROM users "
        "WHERE (lower(name) = lower($1) OR lower(email) = lower($1)) "
        "AND password_hash IS NOT NULL LIMIT 2",
        name,
    )
    return [SignInCandidate(**r) for r in rows]


async def identifier_taken(db: Any, value: str) -> bool:
    """Whether `value` is, in any case, a user's e-mail or the name of a user with a
    password: either would make a sign-in with it ambiguous."""
    taken: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1) "
        "OR (lower(name) = lower($1) AND password_hash IS NOT NULL))",
        value,
    )
    return taken


async def get_user(db: Any, user_id: str) -> UserView | None:
    row = await db.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
    return None if row is None else UserView(**row)


async def list_users(db: Any, limit: int = 500) -> list[UserView]:
    """The newest users first (an admin's list)."""
    rows = await db.fetch(
        f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at DESC, id DESC LIMIT $1", limit
    )
    return [UserView(**r) for r in rows]


async def get_sign_in(db: Any, user_id: str) -> str | None:
    """The user's password hash (None: no such user, or no password yet)."""
    value: str | None = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    return value

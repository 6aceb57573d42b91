"""Passwords: what one must be, and their Argon2id hashes (argon2-cffi's defaults, RFC
9106's second recommended profile). A password is hashed here and never stored, logged
or put in an event; only the hash is (in the user's `UserPasswordSet`).

Hashing costs tens of milliseconds of CPU and 64 MiB: callers on an event loop run it in
a thread (`hash_in_thread`, `verify_in_thread`), at most `limit_concurrency(n)` at once
per event loop (the CPU count unless set): a flood of sign-ins waits its turn instead of
taking every thread of the loop's pool (which the API's other blocking work needs) and
64 MiB for each."""

from __future__ import annotations

import asyncio
import functools
import os
import weakref

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.domain.context import CommandError

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "WeakPasswordError",
    "hash_in_thread",
    "hash_password",
    "limit_concurrency",
    "verify_in_thread",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # hashing a longer one is work for nothing


class WeakPasswordError(CommandError):
    """The password does not meet the rules; the message says which."""


@functools.cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@functools.cache
def _decoy_hash() -> str:
    """A hash to verify against when there is no user: a failed sign-in takes as long
    whether the user exists or not."""
    return _hasher().hash("no such user: a decoy")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(
            f"the password is shorter than {MIN_PASSWORD_LENGTH} characters",
            hint="choose a longer one (a few unrelated words make a good one)",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(
            f"the password is longer than {MAX_PASSWORD_LENGTH} characters",
            hint="choose a shorter one",
        )
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches `password_hash` (None: no such user, verified against
    a decoy all the same, and False)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        matched = _hasher().verify(password_hash or _decoy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


_limit = os.cpu_count() or 1
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def limit_concurrency(limit: int | None) -> int:
    """At most `limit` hashes at once per event loop from now on (None: the CPU
    count); the limit in force."""
    global _limit
    if limit is not None and limit < 1:
        raise ValueError("argon2_concurrency must be at least 1")
    _limit = limit or os.cpu_count() or 1
    _slots.clear()
    return _limit


def _semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(_limit)
    return slots


async def hash_in_thread(password: str) -> str:
    async with _semaphore():
        return await asyncio.to_thread(hash_password, password)


async def verify_in_thread(password_hash: str | None, password: str) -> bool:
    async with _semaphore():
        return await asyncio.to_thread(verify_password, password_hash, password)

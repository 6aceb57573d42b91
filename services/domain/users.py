"""The commands of the user and API-key aggregates: create a user with their first key
(and a password, for the dashboard), sign up (a user with a password, when the operator
allows it), issue a key, revoke one."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

import msgspec

from events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    ConcurrencyConflictError,
    Event,
    UserCreated,
    UserPasswordSet,
)
from services.domain._command_base import CommandBase
from services.domain.access import can_issue_key, can_see_api_key
from services.domain.aggregates import fold_api_key
from services.domain.context import (
    CommandContext,
    ConflictError,
    ForbiddenError,
    NotFoundError,
)
from services.domain.passwords import hash_in_thread

__all__ = ["IssuedKey", "UserCommands", "hash_api_key"]


class IssuedKey(msgspec.Struct, frozen=True):
    key_id: str
    secret: str  # shown once
    seq: int


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _without_idempotency(ctx: CommandContext) -> CommandContext:
    """A key's secret is shown once and never stored, so a retried key issuance cannot
    answer with the first secret: it issues a fresh key instead of deduplicating."""
    return msgspec.structs.replace(ctx, idempotency_key=None)


class UserCommands(CommandBase):
    async def create_user(
        self,
        ctx: CommandContext,
        *,
        name: str,
        is_admin: bool = False,
        user_id: str | None = None,
        password: str | None = None,
        email: str | None = None,
    ) -> tuple[str, IssuedKey]:
        """A user and their first API key (and their password's hash when given), in
        one atomic batch."""
        ctx = _without_idempotency(ctx)
        if not ctx.is_admin:
            raise ForbiddenError("only an admin can create users", hint="use an admin API key")
        user_id = user_id or ctx.resource_id("usr")
        events = await self._new_user(ctx, user_id, name, is_admin, password, email)
        key_event, secret = self._new_key(ctx, user_id=user_id, name="default", is_admin=is_admin)
        seq = await self._append_user([*events, key_event], user_id)
        return user_id, IssuedKey(key_id=key_event.aggregate_id, secret=secret, seq=seq)

    async def sign_up(self, *, name: str, password: str, correlation_id: str) -> tuple[str, int]:
        """A user of their own making, with a password and no key yet (the API allows
        it only when the operator turned sign-up on); (user id, sequence)."""
        user_id = CommandContext(actor="", correlation_id="").resource_id("usr")
        ctx = CommandContext(actor=user_id, correlation_id=correlation_id)
        events = await self._new_user(ctx, user_id, name, False, password)
        return user_id, await self._append_user(events, user_id)

    async def _new_user(
        self,
        ctx: CommandContext,
        user_id: str,
        name: str,
        is_admin: bool,
        password: str | None,
        email: str | None = None,
    ) -> list[UserCreated | UserPasswordSet]:
        created = UserCreated(
            **self._envelope(ctx, "UserCreated", user_id), name=name, is_admin=is_admin, email=email
        )
        events: list[UserCreated | UserPasswordSet] = [created]
        if password is not None:
            password_hash = await hash_in_thread(password)
            events.append(
                UserPasswordSet(
                    **self._envelope(ctx, "UserPasswordSet", user_id), password_hash=password_hash
                )
            )
        return events

    async def _append_user(self, events: Sequence[Event], user_id: str) -> int:
        # One batch, all or none; a new aggregate's first event expects none before it
        # (the password follows the user's creation in the same batch).
        try:
            return await self._store.append_batch(
                [(e, None if isinstance(e, UserPasswordSet) else 0) for e in events]
            )
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"user {user_id} already exists", hint="use a new Idempotency-Key"
            ) from err

    async def issue_api_key(
        self, ctx: CommandContext, *, user_id: str, name: str, is_admin: bool = False
    ) -> IssuedKey:
        ctx = _without_idempotency(ctx)
        refusal = can_issue_key(user_id, is_admin, ctx.actor, ctx.is_admin)
        if refusal is not None:
            raise ForbiddenError(refusal)
        event, secret = self._new_key(ctx, user_id=user_id, name=name, is_admin=is_admin)
        seq = await self._append_new(event)
        return IssuedKey(key_id=event.aggregate_id, secret=secret, seq=seq)

    def _new_key(
        self, ctx: CommandContext, *, user_id: str, name: str, is_admin: bool
    ) -> tuple[ApiKeyIssued, str]:
        secret = f"clinai_{secrets.token_urlsafe(32)}"
        event = ApiKeyIssued(
            **self._envelope(ctx, "ApiKeyIssued", ctx.resource_id("key")),
            user_id=user_id,
            name=name,
            key_hash=hash_api_key(secret),
            prefix=secret[:14],
            is_admin=is_admin,
        )
        return event, secret

    async def revoke_api_key(self, ctx: CommandContext, key_id: str) -> int:
        history = await self._store.read_aggregate("apikey", key_id)
        state = fold_api_key(history.events)
        if state is None or not can_see_api_key(state.issued.user_id, ctx.actor, ctx.is_admin):
            raise NotFoundError(f"API key {key_id} not found")
        if state.revoked:
            return state.last_seq
        event = ApiKeyRevoked(**self._envelope(ctx, "ApiKeyRevoked", key_id))
        return await self._store.append(event, expected=state.last_seq)

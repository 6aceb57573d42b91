"""The commands of the user and API-key aggregates: create a user with their first key,
issue a key, revoke one."""

from __future__ import annotations

import hashlib
import secrets

import msgspec

from events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    ConcurrencyConflictError,
    UserCreated,
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
        self, ctx: CommandContext, *, name: str, is_admin: bool = False, user_id: str | None = None
    ) -> tuple[str, IssuedKey]:
        """A user and their first API key, in one atomic batch."""
        ctx = _without_idempotency(ctx)
        if not ctx.is_admin:
            raise ForbiddenError("only an admin can create users", hint="use an admin API key")
        user_id = user_id or ctx.resource_id("usr")
        user = UserCreated(
            **self._envelope(ctx, "UserCreated", user_id), name=name, is_admin=is_admin
        )
        key_event, secret = self._new_key(ctx, user_id=user_id, name="default", is_admin=is_admin)
        try:
            seq = await self._store.append_batch([(user, 0), (key_event, 0)])
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"user {user_id} already exists", hint="use a new Idempotency-Key"
            ) from err
        return user_id, IssuedKey(key_id=key_event.aggregate_id, secret=secret, seq=seq)

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

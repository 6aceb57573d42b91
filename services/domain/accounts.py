"""The commands of a user's sign-in: set a password (the user, or an admin), invite a
user to set theirs (an admin; a link with a token, recorded as its SHA-256, that works
once until it expires), and accept an invitation. Decided from the user's own events."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import msgspec

from events import UserInvited, UserPasswordSet
from services.domain._command_base import CommandBase
from services.domain.access import can_see_user
from services.domain.aggregates import UserState, fold_user
from services.domain.context import CommandContext, ForbiddenError, NotFoundError
from services.domain.passwords import hash_in_thread

__all__ = [
    "INVITATION_TTL_S",
    "AccountCommands",
    "Invitation",
    "InvitationError",
]

INVITATION_TTL_S = 7 * 24 * 3600.0


class InvitationError(NotFoundError):
    """The invitation is unknown, used or expired (the answer does not say which)."""


class Invitation(msgspec.Struct, frozen=True):
    token: str  # shown once: the link's secret
    expires_at: datetime
    seq: int


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountCommands(CommandBase):
    async def set_password(self, ctx: CommandContext, user_id: str, password: str) -> int:
        """The user's new password (their own, or any user's for an admin); the caller
        checks the current password of a user changing their own."""
        if not can_see_user(user_id, ctx.actor, ctx.is_admin):
            raise ForbiddenError("you can only set your own password")
        state = await self._account(user_id)
        event = UserPasswordSet(
            **self._envelope(ctx, "UserPasswordSet", user_id),
            password_hash=await hash_in_thread(password),
        )
        return await self._store.append(event, expected=state.last_seq)

    async def invite(
        self, ctx: CommandContext, user_id: str, *, ttl_s: float = INVITATION_TTL_S
    ) -> Invitation:
        """An invitation for the user to set their password (admins only)."""
        if not ctx.is_admin:
            raise ForbiddenError("only an admin can invite users", hint="ask an admin")
        state = await self._account(user_id)
        token = f"{user_id}.{secrets.token_urlsafe(32)}"
        expires_at = self._clock() + timedelta(seconds=ttl_s)
        event = UserInvited(
            **self._envelope(
                msgspec.structs.replace(ctx, idempotency_key=None), "UserInvited", user_id
            ),
            token_hash=_token_hash(token),
            expires_at=expires_at,
        )
        seq = await self._store.append(event, expected=state.last_seq)
        return Invitation(token=token, expires_at=expires_at, seq=seq)

    async def accept_invitation(
        self, token: str, password: str, *, correlation_id: str
    ) -> tuple[str, int]:
        """Set the invited user's password; (user id, sequence). Unknown, used and
        expired invitations are refused alike."""
        user_id, dot, _ = token.partition(".")
        refused = InvitationError(
            "this invitation link is unknown, used or expired",
            hint="ask an admin for a new one",
        )
        if not dot or not user_id:
            raise refused
        history = await self._store.read_aggregate("user", user_id)
        state = fold_user(history.events)
        digest = _token_hash(token)
        expires_at = state.invitations.get(digest)
        if expires_at is None or digest in state.used or expires_at <= self._clock():
            raise refused
        ctx = CommandContext(actor=user_id, correlation_id=correlation_id)
        event = UserPasswordSet(
            **self._envelope(ctx, "UserPasswordSet", user_id),
            password_hash=await hash_in_thread(password),
            invitation_hash=digest,
        )
        return user_id, await self._store.append(event, expected=state.last_seq)

    async def _account(self, user_id: str) -> UserState:
        state = fold_user((await self._store.read_aggregate("user", user_id)).events)
        if not state.exists:
            raise NotFoundError(f"user {user_id} not found", hint="check the user id")
        return state

"""The write side: each command reads the aggregates it decides from out of the log,
checks the rules, and appends its events (one message or one atomic batch) with the
expected sequences it decided from. Used by the API and the CLI."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    ConcurrencyConflictError,
    Event,
    EventStore,
    JobCancelRequested,
    JobRequested,
    JobWebhook,
    ModelCreated,
    ModelDeleted,
    ModelNameClaimed,
    ModelNameReleased,
    ModelUpdated,
    ModelVersionAdded,
    UserCreated,
    VersionUploaded,
)
from services.access import can_change_model, can_read_model
from services.aggregates import (
    ModelState,
    fold_api_key,
    fold_job,
    fold_model,
    fold_name_claim,
)
from services.command_context import (
    CommandContext,
    CommandError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
)

__all__ = [
    "CommandContext",
    "CommandError",
    "Commands",
    "ConflictError",
    "ForbiddenError",
    "IssuedKey",
    "NotFoundError",
    "hash_api_key",
]

Clock = Callable[[], datetime]

_MAX_RETRIES = 5


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


def _name_claim_id(owner: str, name: str) -> str:
    return hashlib.sha256(f"{owner}\x00{name.casefold()}".encode()).hexdigest()[:40]


class Commands:
    def __init__(self, store: EventStore, *, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    def _envelope(self, ctx: CommandContext, purpose: str, aggregate_id: str) -> dict[str, Any]:
        return ctx.envelope(purpose, aggregate_id, self._clock())

    # --- users and keys ----------------------------------------------------------------

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
        if user_id != ctx.actor and not ctx.is_admin:
            raise ForbiddenError("you can only issue keys for yourself")
        if is_admin and not ctx.is_admin:
            raise ForbiddenError("only an admin can issue admin keys")
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
        if state is None or (state.issued.user_id != ctx.actor and not ctx.is_admin):
            raise NotFoundError(f"API key {key_id} not found")
        if state.revoked:
            return state.last_seq
        event = ApiKeyRevoked(**self._envelope(ctx, "ApiKeyRevoked", key_id))
        return await self._store.append(event, expected=state.last_seq)

    # --- models ----------------------------------------------------------------------------

    async def load_model(self, ctx: CommandContext, model_id: str, *, write: bool) -> ModelState:
        history = await self._store.read_aggregate("model", model_id)
        state = fold_model(history.events)
        if (
            state is None
            or state.deleted
            or not can_read_model(state.owner, state.visibility, ctx.actor, ctx.is_admin)
        ):
            raise NotFoundError(
                f"model {model_id} not found",
                hint="check the id with GET /v1/models; "
                "private models are visible to their owner only",
            )
        if write and not can_change_model(state.owner, ctx.actor, ctx.is_admin):
            raise ForbiddenError(
                f"model {model_id} is another user's public model: you may run it, but only "
                "its owner can change it, delete it or upload versions",
                hint="run it with POST /v1/jobs (-F model=...), or create a model of your own",
            )
        return state

    async def create_model(
        self, ctx: CommandContext, *, name: str, description: str, visibility: str
    ) -> tuple[str, int]:
        model_id = ctx.resource_id("mdl")
        claim_id = _name_claim_id(ctx.actor, name)
        claim = fold_name_claim((await self._store.read_aggregate("modelname", claim_id)).events)
        if claim.model_id is not None and claim.model_id != model_id:
            raise ConflictError(
                f"you already have a model named {name!r}",
                hint="pick another name, or upload a new version to the existing model",
            )
        events: list[tuple[Event, int | None]] = [
            (
                ModelNameClaimed(
                    **self._envelope(ctx, "ModelNameClaimed", claim_id),
                    owner=ctx.actor,
                    name=name,
                    model_id=model_id,
                ),
                claim.last_seq,
            ),
            (
                ModelCreated(
                    **self._envelope(ctx, "ModelCreated", model_id),
                    owner=ctx.actor,
                    name=name,
                    description=description,
                    visibility=visibility,  # type: ignore[arg-type]
                ),
                0,
            ),
        ]
        try:
            seq = await self._store.append_batch(events)
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"you already have a model named {name!r}",
                hint="pick another name, or upload a new version to the existing model",
            ) from err
        return model_id, seq

    async def update_model(
        self,
        ctx: CommandContext,
        model_id: str,
        *,
        name: str | None,
        description: str | None,
        visibility: str | None,
    ) -> int:
        state = await self.load_model(ctx, model_id, write=True)
        update = ModelUpdated(
            **self._envelope(ctx, "ModelUpdated", model_id),
            name=name if name != state.name else None,
            description=description,
            visibility=visibility,  # type: ignore[arg-type]
        )
        events: list[tuple[Event, int | None]] = [(update, state.last_seq)]
        if update.name is not None:
            events.extend(await self._rename_claims(ctx, state, update.name))
        try:
            return await self._store.append_batch(events)
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"model {model_id} changed while updating it, or the name is taken",
                hint="GET the model again and retry",
            ) from err

    async def _rename_claims(
        self, ctx: CommandContext, state: ModelState, new_name: str
    ) -> list[tuple[Event, int | None]]:
        new_claim_id = _name_claim_id(state.owner, new_name)
        new_claim = fold_name_claim(
            (await self._store.read_aggregate("modelname", new_claim_id)).events
        )
        if new_claim.model_id is not None:
            raise ConflictError(f"you already have a model named {new_name!r}")
        old_claim_id = _name_claim_id(state.owner, state.name)
        old_seq = await self._store.last_seq("modelname", old_claim_id)
        return [
            (
                ModelNameClaimed(
                    **self._envelope(ctx, "ModelNameClaimed", new_claim_id),
                    owner=state.owner,
                    name=new_name,
                    model_id=state.model_id,
                ),
                new_claim.last_seq,
            ),
            (
                ModelNameReleased(
                    **self._envelope(ctx, "ModelNameReleased", old_claim_id),
                    owner=state.owner,
                    name=state.name,
                    model_id=state.model_id,
                ),
                old_seq,
            ),
        ]

    async def delete_model(self, ctx: CommandContext, model_id: str) -> int:
        state = await self.load_model(ctx, model_id, write=True)
        claim_id = _name_claim_id(state.owner, state.name)
        claim_seq = await self._store.last_seq("modelname", claim_id)
        try:
            return await self._store.append_batch(
                [
                    (ModelDeleted(**self._envelope(ctx, "ModelDeleted", model_id)), state.last_seq),
                    (
                        ModelNameReleased(
                            **self._envelope(ctx, "ModelNameReleased", claim_id),
                            owner=state.owner,
                            name=state.name,
                            model_id=model_id,
                        ),
                        claim_seq,
                    ),
                ]
            )
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"model {model_id} changed while deleting it", hint="retry the delete"
            ) from err

    # --- versions -------------------------------------------------------------------------

    async def add_version(
        self,
        ctx: CommandContext,
        model_id: str,
        *,
        version_id: str,
        package_key: str,
        package_hash: str,
        requirements_hash: str,
        size_bytes: int,
        filename: str,
        has_setup: bool,
    ) -> tuple[int, int]:
        """Allocate the next version number on the model and record the upload, atomically.
        Returns (number, seq)."""
        for _ in range(_MAX_RETRIES):
            state = await self.load_model(ctx, model_id, write=True)
            number = state.latest_version + 1
            added = ModelVersionAdded(
                **self._envelope(ctx, "ModelVersionAdded", model_id),
                version_id=version_id,
                number=number,
            )
            uploaded = VersionUploaded(
                **self._envelope(ctx, "VersionUploaded", version_id),
                model_id=model_id,
                owner=state.owner,
                number=number,
                package_key=package_key,
                package_hash=package_hash,
                requirements_hash=requirements_hash,
                size_bytes=size_bytes,
                filename=filename,
                has_setup=has_setup,
            )
            try:
                seq = await self._store.append_batch([(added, state.last_seq), (uploaded, 0)])
            except ConcurrencyConflictError:
                if ctx.idempotency_key is not None:
                    break  # a retry with the same key must not allocate another number
                continue  # another upload took this number: take the next one
            return number, seq
        raise ConflictError(
            f"model {model_id} is being changed concurrently",
            hint="retry the upload (with a new Idempotency-Key if the previous one failed)",
        )

    # --- jobs --------------------------------------------------------------------------------

    async def request_job(
        self,
        ctx: CommandContext,
        *,
        job_id: str,
        owner: str,
        model_id: str,
        version_id: str,
        input_key: str,
        input_filename: str,
        input_size_bytes: int,
        params: dict[str, Any],
        timeout_s: float,
        webhook: JobWebhook | None,
    ) -> int:
        event = JobRequested(
            **self._envelope(ctx, "JobRequested", job_id),
            owner=owner,
            model_id=model_id,
            version_id=version_id,
            input_key=input_key,
            input_filename=input_filename,
            input_size_bytes=input_size_bytes,
            params=params,
            timeout_s=timeout_s,
            webhook=webhook,
        )
        return await self._append_new(event)

    async def cancel_job(self, ctx: CommandContext, job_id: str) -> int:
        for _ in range(_MAX_RETRIES):
            history = await self._store.read_aggregate("job", job_id)
            state = fold_job(history.events)
            if state is None or (state.requested.owner != ctx.actor and not ctx.is_admin):
                raise NotFoundError(f"job {job_id} not found")
            if state.terminal:
                raise ConflictError(
                    f"job {job_id} already ended ({state.status})",
                    hint="nothing to cancel; GET the job for its result",
                )
            if state.cancel_requested:
                return state.last_seq
            event = JobCancelRequested(**self._envelope(ctx, "JobCancelRequested", job_id))
            try:
                return await self._store.append(event, expected=state.last_seq)
            except ConcurrencyConflictError:
                continue  # the job moved on (started, finished): decide again
        raise ConflictError(f"job {job_id} is changing too fast to cancel", hint="retry")

    async def _append_new(self, event: Event) -> int:
        """Append the first event of a new aggregate (expected sequence 0)."""
        try:
            return await self._store.append(event, expected=0)
        except ConcurrencyConflictError as err:
            raise ConflictError(
                f"{event.aggregate} {event.aggregate_id} already exists",
                hint="use a new Idempotency-Key for a new request",
            ) from err

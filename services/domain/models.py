"""The commands of the model aggregate and its name claims: create, update (rename,
visibility, description), delete. A model's name is unique per owner, held by a claim
aggregate (`modelname`) that the same atomic batch takes and releases."""

from __future__ import annotations

import hashlib

from events import (
    ConcurrencyConflictError,
    Event,
    ModelCreated,
    ModelDeleted,
    ModelNameClaimed,
    ModelNameReleased,
    ModelUpdated,
)
from services.domain._command_base import CommandBase
from services.domain.access import can_change_model, can_read_model
from services.domain.aggregates import ModelState, fold_model, fold_name_claim
from services.domain.context import (
    CommandContext,
    ConflictError,
    ForbiddenError,
    NotFoundError,
)

__all__ = ["ModelCommands"]


def _name_claim_id(owner: str, name: str) -> str:
    return hashlib.sha256(f"{owner}\x00{name.casefold()}".encode()).hexdigest()[:40]


class ModelCommands(CommandBase):
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
        replay = await self.replays(ctx, "model", model_id)  # a retry takes the same name
        claim = fold_name_claim((await self._store.read_aggregate("modelname", claim_id)).events)
        if claim.model_id is not None and claim.model_id != model_id and not replay:
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
                    request_digest=ctx.request_digest,
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

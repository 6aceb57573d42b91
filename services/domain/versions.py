"""The command of the version aggregate: record an uploaded package as the model's next
version (the number is allocated on the model, atomically with the upload)."""

from __future__ import annotations

from events import ConcurrencyConflictError, InputSchema, ModelVersionAdded, VersionUploaded
from services.domain._command_base import MAX_RETRIES
from services.domain.context import CommandContext, ConflictError
from services.domain.models import ModelCommands

__all__ = ["VersionCommands"]


class VersionCommands(ModelCommands):
    """Versions are added to a model its caller may change (`load_model`)."""

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
        input_schema: InputSchema | None = None,
    ) -> tuple[int, int]:
        """Allocate the next version number on the model and record the upload, atomically.
        Returns (number, seq)."""
        for _ in range(MAX_RETRIES):
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
                input_schema=input_schema,
                request_digest=ctx.request_digest,
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

"""The commands of the job aggregate: request a job, cancel it, abort it once its
deadline has passed while it was queued."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from events import (
    ConcurrencyConflictError,
    InputFile,
    JobAborted,
    JobCancelRequested,
    JobRequested,
    JobWebhook,
)
from services.domain._command_base import MAX_RETRIES, CommandBase
from services.domain.access import can_see_job
from services.domain.aggregates import fold_job
from services.domain.context import CommandContext, ConflictError, NotFoundError

__all__ = ["JobCommands"]


class JobCommands(CommandBase):
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
        input_url: str | None = None,
        inputs: dict[str, Any] | None = None,
        input_files: tuple[InputFile, ...] = (),
        deadline: datetime | None = None,
    ) -> int:
        """`deadline`: when the job is aborted if still queued, canceled if running."""
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
            input_url=input_url,
            inputs=inputs,
            input_files=input_files,
            deadline=deadline,
            request_digest=ctx.request_digest,
        )
        return await self._append_new(event)

    async def cancel_job(self, ctx: CommandContext, job_id: str) -> int:
        for _ in range(MAX_RETRIES):
            history = await self._store.read_aggregate("job", job_id)
            state = fold_job(history.events)
            if state is None or not can_see_job(state.requested.owner, ctx.actor, ctx.is_admin):
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

    async def abort_overdue(self, actor: str, job_id: str) -> int | None:
        """End job `job_id` with `JobAborted` if it is still queued past its deadline;
        the sequence of that event, or None when the job started, ended or is not due
        (whoever ends a job first wins: every end is appended with the expected
        sequence it was decided from). The event follows the job's request (its
        correlation id, caused by it)."""
        for _ in range(MAX_RETRIES):
            history = await self._store.read_aggregate("job", job_id)
            state = fold_job(history.events)
            if state is None or state.status != "queued" or not state.past_deadline(self._clock()):
                return None
            requested = state.requested
            ctx = CommandContext(
                actor=actor, correlation_id=requested.correlation_id, causation_id=requested.id
            )
            event = JobAborted(**self._envelope(ctx, "JobAborted", job_id))
            try:
                return await self._store.append(event, expected=state.last_seq)
            except ConcurrencyConflictError:
                continue  # started, canceled or aborted meanwhile: decide again
        raise ConflictError(f"job {job_id} is changing too fast to abort", hint="retry")

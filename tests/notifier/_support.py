"""Helpers of the notifier tests: job events straight into the log, waits with deadlines."""

from __future__ import annotations

from events import (
    EventStore,
    JobStarted,
    JobSucceeded,
    JobWebhook,
    new_id,
)
from projections import webhook_queries
from projections.db import connect
from services.domain import CommandContext
from tests._events import job_requested, new_event

__all__ = ["ctx_of", "deliveries", "job_lifecycle", "request_job"]


def ctx_of(user: str) -> CommandContext:
    return CommandContext(actor=user, correlation_id="test")


async def request_job(store: EventStore, owner: str, webhook: JobWebhook | None = None) -> str:
    job_id = new_id("job")
    await store.append(
        job_requested(job_id, owner, input_key=f"inputs/{job_id}/in.png", webhook=webhook),
        expected=0,
    )
    return job_id


async def job_lifecycle(store: EventStore, owner: str, webhook: JobWebhook | None = None) -> str:
    """A job requested, started and succeeded."""
    job_id = await request_job(store, owner, webhook)
    started = new_event(JobStarted, job_id, worker="w1")
    await store.append(started, expected=None)
    succeeded = new_event(JobSucceeded, job_id, result={"ok": 1})
    await store.append(succeeded, expected=None)
    return job_id


async def deliveries(dsn: str, endpoint_id: str) -> list[webhook_queries.DeliveryView]:
    conn = await connect(dsn)
    try:
        return await webhook_queries.list_deliveries(conn, endpoint_id, limit=500)
    finally:
        await conn.close()

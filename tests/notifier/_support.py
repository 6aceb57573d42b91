"""Helpers of the notifier tests: job events straight into the log, waits with deadlines."""

from __future__ import annotations

from datetime import UTC, datetime

from events import (
    EventStore,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobWebhook,
    new_event_id,
    new_id,
)
from projections import webhook_queries
from projections.db import connect
from services.domain import CommandContext

__all__ = ["ctx_of", "deliveries", "job_lifecycle", "request_job"]


def ctx_of(user: str) -> CommandContext:
    return CommandContext(actor=user, correlation_id="test")


def _env(job_id: str) -> dict[str, object]:
    return {
        "id": new_event_id(),
        "aggregate_id": job_id,
        "occurred_at": datetime.now(UTC),
        "actor": "test",
        "correlation_id": "test",
    }


async def request_job(store: EventStore, owner: str, webhook: JobWebhook | None = None) -> str:
    job_id = new_id("job")
    await store.append(
        JobRequested(
            **_env(job_id),  # type: ignore[arg-type]
            owner=owner,
            model_id="mdl_x",
            version_id="ver_x",
            input_key=f"inputs/{job_id}/in.png",
            input_filename="in.png",
            webhook=webhook,
        ),
        expected=0,
    )
    return job_id


async def job_lifecycle(store: EventStore, owner: str, webhook: JobWebhook | None = None) -> str:
    """A job requested, started and succeeded."""
    job_id = await request_job(store, owner, webhook)
    await store.append(JobStarted(**_env(job_id), worker="w1"), expected=None)  # type: ignore[arg-type]
    await store.append(JobSucceeded(**_env(job_id), result={"ok": 1}), expected=None)  # type: ignore[arg-type]
    return job_id


async def deliveries(dsn: str, endpoint_id: str) -> list[webhook_queries.DeliveryView]:
    conn = await connect(dsn)
    try:
        return await webhook_queries.list_deliveries(conn, endpoint_id, limit=500)
    finally:
        await conn.close()

"""Events made by hand for the tests (the envelope filled in once, the fields by the
test), and a job's request read back from a running stack's log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import nats

from events import Event, EventStore, JobRequested, new_event_id

__all__ = ["job_requested", "logged_job_request", "new_event"]

E = TypeVar("E", bound=Event)


def new_event(
    cls: type[E],
    aggregate_id: str,
    *,
    actor: str = "usr_test",
    correlation_id: str = "test",
    event_id: str | None = None,
    **fields: Any,
) -> E:
    """An event of `cls` on `aggregate_id`, occurring now, with a fresh id unless
    `event_id` is given."""
    return cls(
        id=event_id or new_event_id(),
        aggregate_id=aggregate_id,
        occurred_at=datetime.now(UTC),
        actor=actor,
        correlation_id=correlation_id,
        **fields,
    )


def job_requested(job_id: str, owner: str, **fields: Any) -> JobRequested:
    """A request of job `job_id` by `owner` for a model and version that need not exist
    (for the tests of what reads the log: the stream, the projection, the webhooks).
    `fields` set the envelope (`actor`, ...) or override the request's own fields."""
    request: dict[str, Any] = {
        "model_id": "mdl_x",
        "version_id": "ver_x",
        "input_key": "k",
        "input_filename": "in.png",
        **fields,
    }
    return new_event(JobRequested, job_id, owner=owner, **request)


async def logged_job_request(nats_url: str, stream: str, job_id: str) -> JobRequested:
    """The `JobRequested` of `job_id` as the log holds it."""
    nc = await nats.connect(nats_url)
    try:
        history = await (await EventStore.open(nc, stream=stream)).read_aggregate("job", job_id)
    finally:
        await nc.drain()
    event = history.events[0].event
    if not isinstance(event, JobRequested):
        raise AssertionError(f"{job_id} begins with {type(event).__name__}, not JobRequested")
    return event

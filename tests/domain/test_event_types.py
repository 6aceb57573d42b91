"""services/domain/event_types.py: webhook event types and filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from events import JobAborted, JobFailed, JobSucceeded
from services.domain.event_types import (
    InvalidFilterError,
    check_filter,
    job_hook_wants,
    matches,
    webhook_type,
)


def test_filters_and_types() -> None:
    assert check_filter(["job.*", " version.built "]) == ("job.*", "version.built")
    for bad in ([], ["jobs.*"], ["job.succeded"]):
        with pytest.raises(InvalidFilterError):
            check_filter(bad)
    assert matches(("job.*",), "job.succeeded") and not matches(("job.*",), "version.built")
    env = {
        "id": "e",
        "aggregate_id": "job_1",
        "occurred_at": datetime.now(UTC),
        "actor": "a",
        "correlation_id": "c",
    }
    assert webhook_type(JobSucceeded(**env)) == "job.succeeded"  # type: ignore[arg-type]
    canceled = JobFailed(**env, kind="canceled", message="m")  # type: ignore[arg-type]
    assert webhook_type(canceled) == "job.canceled"
    assert job_hook_wants(("completed",), "job.failed")
    # A job aborted at its deadline is a terminal event like the others.
    assert webhook_type(JobAborted(**env)) == "job.aborted"  # type: ignore[arg-type]
    assert job_hook_wants(("completed",), "job.aborted")
    assert check_filter(["job.aborted"]) == ("job.aborted",)
    assert job_hook_wants(("start",), "job.started")
    assert not job_hook_wants(("start",), "job.succeeded")

"""services/notifier/_receivers.py: the facts that decide who receives an event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from events import JobRequested, JobSucceeded, JobWebhook, ModelCreated
from services.notifier._receivers import Receivers, ReceiversCache, receivers_of


def _envelope(event_id: str, aggregate_id: str, *, actor: str = "usr_1") -> dict[str, Any]:
    return {
        "id": event_id,
        "aggregate_id": aggregate_id,
        "occurred_at": datetime(2025, 1, 1, tzinfo=UTC),
        "actor": actor,
        "correlation_id": "c",
        "causation_id": "c",
    }


def _requested(webhook: JobWebhook | None) -> JobRequested:
    return JobRequested(
        **_envelope("evt_1", "job_1"),
        owner="usr_1",
        model_id="mdl_1",
        version_id="ver_1",
        input_key="inputs/job_1/x.png",
        input_filename="x.png",
        webhook=webhook,
    )


def test_facts_come_from_creating_events_only() -> None:
    hook = JobWebhook(url="https://example.com/h", events=("start",))
    assert receivers_of(_requested(hook)) == Receivers(
        owner="usr_1", job_webhook={"url": "https://example.com/h", "events": ("start",)}
    )
    assert receivers_of(_requested(None)) == Receivers(owner="usr_1")
    created = ModelCreated(
        **_envelope("evt_2", "mdl_1"),
        owner="usr_1",
        name="m",
    )
    assert receivers_of(created) == Receivers(owner="usr_1")
    succeeded = JobSucceeded(
        **_envelope("evt_3", "job_1", actor="executor"),
    )
    assert receivers_of(succeeded) is None


def test_facts_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = ReceiversCache(max_size=2)
    cache.put("job", "a", Receivers(owner="u"))
    cache.put("job", "b", Receivers(owner="v"))
    assert cache.get("job", "a") == Receivers(owner="u")  # a is now the most recent
    cache.put("job", "c", Receivers(owner="w"))
    assert len(cache) == 2
    assert cache.get("job", "b") is None
    assert cache.get("job", "a") is not None
    with pytest.raises(ValueError):
        ReceiversCache(max_size=0)

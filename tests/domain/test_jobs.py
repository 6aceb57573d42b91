"""services/domain/jobs.py: requesting, cancelling and aborting jobs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from events import TERMINAL_JOB_EVENTS, EventStore, JobAborted, JobStarted
from services.domain import Commands, ConflictError, NotFoundError
from services.domain.aggregates import fold_job
from tests._events import new_event
from tests.domain.conftest import as_user


async def _request(
    commands: Commands, owner: str, job_id: str, deadline: datetime | None = None
) -> int:
    return await commands.request_job(
        as_user(owner),
        job_id=job_id,
        owner=owner,
        model_id="mdl_1",
        version_id="ver_1",
        input_key=f"inputs/{job_id}/x",
        input_filename="x",
        input_size_bytes=1,
        params={},
        timeout_s=10.0,
        webhook=None,
        deadline=deadline,
    )


async def test_a_job_id_is_requested_once(commands: Commands) -> None:
    await _request(commands, "usr_a", "job_1")
    with pytest.raises(ConflictError, match="already exists"):
        await _request(commands, "usr_a", "job_1")


async def test_another_users_job_is_not_found_and_a_cancel_is_sent_once(
    commands: Commands,
) -> None:
    await _request(commands, "usr_a", "job_1")
    with pytest.raises(NotFoundError):
        await commands.cancel_job(as_user("usr_b"), "job_1")
    seq = await commands.cancel_job(as_user("usr_a"), "job_1")
    assert await commands.cancel_job(as_user("adm", admin=True), "job_1") == seq


async def test_an_unknown_job_is_not_found(commands: Commands) -> None:
    with pytest.raises(NotFoundError):
        await commands.cancel_job(as_user("usr_a"), "job_missing")


async def test_a_queued_job_past_its_deadline_is_aborted_once(
    commands: Commands, store: EventStore
) -> None:
    now = datetime.now(UTC)
    await _request(commands, "usr_a", "job_due", deadline=now - timedelta(seconds=1))
    await _request(commands, "usr_a", "job_later", deadline=now + timedelta(hours=1))
    await _request(commands, "usr_a", "job_none")
    # Ten aborts at once (API processes sweeping together): one event, the others see it.
    seqs = await asyncio.gather(
        *(commands.abort_overdue("service:api", "job_due") for _ in range(10))
    )
    assert len([s for s in seqs if s is not None]) == 1
    history = (await store.read_aggregate("job", "job_due")).events
    [aborted] = [s.event for s in history if isinstance(s.event, TERMINAL_JOB_EVENTS)]
    assert isinstance(aborted, JobAborted) and aborted.reason == "deadline"
    requested = history[0].event
    assert aborted.correlation_id == requested.correlation_id
    assert aborted.causation_id == requested.id
    state = fold_job(history)
    assert state is not None and state.status == "aborted" and state.terminal
    # Not due, or without a deadline: left alone.
    assert await commands.abort_overdue("service:api", "job_later") is None
    assert await commands.abort_overdue("service:api", "job_none") is None
    assert await commands.abort_overdue("service:api", "job_missing") is None


async def test_a_started_job_is_not_aborted(commands: Commands, store: EventStore) -> None:
    seq = await _request(
        commands, "usr_a", "job_1", deadline=datetime.now(UTC) - timedelta(seconds=1)
    )
    await store.append(new_event(JobStarted, "job_1", worker="w"), expected=seq)
    assert await commands.abort_overdue("service:api", "job_1") is None
    state = fold_job((await store.read_aggregate("job", "job_1")).events)
    assert state is not None and state.status == "running"

"""The executor and a job's deadline: a job it takes past its deadline is aborted without
running (at once, without waiting for a slot, when it arrives late), a running one is
canceled at its deadline, and a job that ends in time is unaffected; one terminal event
each."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from events import Event, JobAborted, JobCanceled, JobRequested, JobStarted, JobSucceeded
from services.runtimes.base import Runtime
from services.settings import Settings
from tests._infra import wait_until
from tests.services._support import ADMIN, ModelPackage, job_state, terminal_events
from tests.services.conftest import Rig, job_ended, running_executor, succeeded_at_once

MODEL = {
    "predict.py": """
import os
import time


def run(input_path, output_dir, params):
    if params.get("sleep"):
        with open(os.path.join(output_dir, "started"), "w") as f:
            f.write("started")
        time.sleep(float(params["sleep"]))
    return {"slept": params.get("sleep", 0)}
""",
    "requirements.txt": "",
}


@pytest.fixture
async def version(tmp_path: Path, rig: Rig) -> tuple[str, str]:
    return await rig.built(ModelPackage(tmp_path, MODEL))


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def _running(rig: Rig, job_id: str) -> None:
    async def started() -> bool:
        return (await job_state(rig.store, job_id)).status == "running"

    await wait_until(started, timeout_s=30, what=f"job {job_id} to start")


async def _ended_alone(rig: Rig, job_id: str) -> list[Event]:
    """The job's events once ended, checked to hold exactly one terminal event."""
    events = await rig.ended(job_id, 30)
    history = (await rig.store.read_aggregate("job", job_id)).events
    assert len(terminal_events(history)) == 1, events
    return events


async def test_a_job_taken_past_its_deadline_is_aborted_without_running(
    rig: Rig, version: tuple[str, str]
) -> None:
    job_id = await rig.request_job(version, deadline=_in(-1))
    rig.services.executor()
    events = await _ended_alone(rig, job_id)
    assert [type(e) for e in events] == [JobRequested, JobAborted], events
    aborted = events[-1]
    assert isinstance(aborted, JobAborted) and aborted.reason == "deadline"
    assert aborted.actor == "service:executor"
    assert (await job_state(rig.store, job_id)).status == "aborted"


async def test_a_running_job_is_canceled_at_its_deadline(
    rig: Rig, version: tuple[str, str]
) -> None:
    rig.services.executor()
    # Time enough to start (the worker of an already built version), not to finish.
    deadline = _in(8)
    job_id = await rig.request_job(version, {"sleep": 3600}, deadline=deadline, timeout_s=600)
    await _running(rig, job_id)
    events = await _ended_alone(rig, job_id)
    ended_at = datetime.now(UTC)
    assert [type(e) for e in events] == [JobRequested, JobStarted, JobCanceled], events
    canceled = events[-1]
    assert isinstance(canceled, JobCanceled) and "deadline" in canceled.message
    assert deadline <= canceled.occurred_at < deadline + timedelta(seconds=3)
    assert ended_at < deadline + timedelta(seconds=5)


async def test_a_job_that_ends_in_time_is_unaffected(rig: Rig, version: tuple[str, str]) -> None:
    rig.services.executor()
    job_id = await rig.request_job(version, deadline=_in(120))
    done = succeeded_at_once(await _ended_alone(rig, job_id))
    assert done.result == {"slept": 0}


async def test_a_job_waiting_for_a_slot_never_runs_past_its_deadline(
    settings: Settings, runtime: Runtime, rig: Rig, version: tuple[str, str]
) -> None:
    one_slot = msgspec.structs.replace(settings, workers_total=1, workers_per_version=1)
    async with running_executor(one_slot, runtime):
        busy = await rig.request_job(version, {"sleep": 3600}, timeout_s=600)
        await _running(rig, busy)
        # Past its deadline when it arrives: ended at once, though the one slot is taken.
        late = await rig.request_job(version, deadline=_in(-1))
        await job_ended(rig.store, late, timeout_s=10)
        assert (await job_state(rig.store, busy)).status == "running"
        # Due while it waits for the slot: once the slot frees, it is aborted, not run.
        due = _in(1)
        waiting = await rig.request_job(version, deadline=due)
        await wait_until(lambda: datetime.now(UTC) > due, what="the waiting job's deadline")
        assert (await job_state(rig.store, waiting)).status == "queued"
        await rig.commands.cancel_job(ADMIN, busy)
        for job_id in (late, waiting):
            events = await _ended_alone(rig, job_id)
            assert [type(e) for e in events] == [JobRequested, JobAborted], (job_id, events)


async def test_deadlines_racing_starts_results_and_sweeps_end_each_job_once(
    rig: Rig, version: tuple[str, str]
) -> None:
    """Jobs whose deadline falls while some wait, some start and some run, with an
    executor and three sweeps (as API processes run them) all ending them: one end each,
    and an aborted job never started."""
    rig.services.executor()
    due = _in(1.0)
    jobs = [await rig.request_job(version, {"sleep": 0.3}, deadline=due) for _ in range(24)]

    async def sweep_until_all_ended() -> None:
        while True:
            states = [await job_state(rig.store, job_id) for job_id in jobs]
            if all(s.terminal for s in states):
                return
            queued = [j for j, s in zip(jobs, states, strict=True) if s.status == "queued"]
            for job_id in queued:
                await rig.commands.abort_overdue("service:api", job_id)
            await asyncio.sleep(0.05)  # a sweep's period

    await asyncio.wait_for(asyncio.gather(*(sweep_until_all_ended() for _ in range(3))), 60)
    outcomes = set()
    for job_id in jobs:
        events = await _ended_alone(rig, job_id)
        outcomes.add(type(events[-1]))
        if isinstance(events[-1], JobAborted):
            assert not any(isinstance(e, JobStarted) for e in events), events
    assert JobAborted in outcomes and outcomes <= {JobSucceeded, JobCanceled, JobAborted}

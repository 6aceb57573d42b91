"""One owner's flood of jobs does not hold up another owner's job, and an owner's cap
on running jobs holds: the executor against real NATS and the process runtime."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from pathlib import Path

import msgspec
import pytest

from events import EventStore, JobStarted
from services.blobstore import FileBlobStore
from services.domain import Commands
from services.domain.limits import UserLimits, set_user_limits
from services.runtimes.base import Runtime
from services.settings import Settings
from tests._infra import wait_until
from tests.services._support import (
    ADMIN,
    ModelPackage,
    job_state,
)
from tests.services.conftest import Rig, running_executor

SLOTS = 2

MODEL = {
    "predict.py": """
import time


def run(input_path, output_dir, params):
    time.sleep(float(params.get("seconds", 0)))
    return {}
""",
    "requirements.txt": "",
}


@pytest.fixture
async def version(tmp_path: Path, rig: Rig) -> tuple[str, str]:
    return await rig.built(ModelPackage(tmp_path, MODEL))


def _executor(settings: Settings, runtime: Runtime) -> contextlib.AbstractAsyncContextManager[None]:
    narrow = msgspec.structs.replace(settings, workers_total=SLOTS, workers_per_version=SLOTS)
    return running_executor(narrow, runtime, stop_s=30)


async def _request(
    commands: Commands, blobs: FileBlobStore, version: tuple[str, str], owner: str, seconds: float
) -> tuple[str, int]:
    job_id = f"job_{uuid.uuid4().hex[:20]}"
    key = f"inputs/{job_id}"
    await blobs.put_bytes(key, b"x", "text/plain")
    seq = await commands.request_job(
        ADMIN,
        job_id=job_id,
        owner=owner,
        model_id=version[0],
        version_id=version[1],
        input_key=key,
        input_filename="in.txt",
        input_size_bytes=1,
        params={"seconds": seconds},
        timeout_s=60,
        webhook=None,
    )
    return job_id, seq


async def _started_seq(store: EventStore, job_id: str) -> int | None:
    history = await store.read_aggregate("job", job_id)
    return next((s.seq for s in history.events if isinstance(s.event, JobStarted)), None)


async def _all_ended(store: EventStore, job_ids: list[str], timeout_s: float) -> None:
    async def ended() -> bool:
        states = await asyncio.gather(*(job_state(store, j) for j in job_ids))
        return all(s.terminal for s in states)

    await wait_until(ended, timeout_s=timeout_s, what="every job to end")


async def test_a_flood_by_one_owner_does_not_hold_up_anothers_job(
    settings: Settings, runtime: Runtime, rig: Rig, version: tuple[str, str]
) -> None:
    store, commands, blobs = rig.store, rig.commands, rig.blobs
    async with _executor(settings, runtime):
        # Warm both workers, so the flood below queues behind running jobs only.
        warm = [(await _request(commands, blobs, version, "usr_a", 0))[0] for _ in range(SLOTS)]
        await _all_ended(store, warm, 60)
        flood = [(await _request(commands, blobs, version, "usr_a", 0.3))[0] for _ in range(24)]
        single, requested_seq = await _request(commands, blobs, version, "usr_b", 0)
        await _all_ended(store, [*flood, single], 120)
        single_started = await _started_seq(store, single)
        assert single_started is not None
        flood_started = [await _started_seq(store, j) for j in flood]
        # Jobs of the flood that started after B asked and before B started: at most the
        # slots that freed while B's request was on its way (was 22 of 24 before).
        overtaking = [
            s for s in flood_started if s is not None and requested_seq < s < single_started
        ]
        assert len(overtaking) <= SLOTS, (len(overtaking), flood_started, single_started)


async def test_an_owners_running_cap_holds_and_an_admin_sets_it_per_user(
    settings: Settings, runtime: Runtime, rig: Rig, version: tuple[str, str]
) -> None:
    store, commands, blobs = rig.store, rig.commands, rig.blobs
    await commands.create_user(ADMIN, name="capped", user_id="usr_capped")
    await set_user_limits(store, ADMIN, "usr_capped", UserLimits(max_running_jobs=1))
    async with _executor(settings, runtime):
        jobs = [(await _request(commands, blobs, version, "usr_capped", 0.2))[0] for _ in range(4)]
        await _all_ended(store, jobs, 120)
    # With a cap of 1, each job started after the previous one ended.
    spans = []
    for job_id in jobs:
        history = (await store.read_aggregate("job", job_id)).events
        spans.append((history[1].seq, history[-1].seq))
    spans.sort()
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started > ended, spans


async def test_an_owners_running_cap_holds_across_two_executors(
    settings: Settings,
    runtime: Runtime,
    store: EventStore,
    commands: Commands,
    blobs: FileBlobStore,
    version: tuple[str, str],
) -> None:
    """Before, each executor applied the cap to its own jobs: two ran two at once."""
    await commands.create_user(ADMIN, name="capped", user_id="usr_capped")
    await set_user_limits(store, ADMIN, "usr_capped", UserLimits(max_running_jobs=1))
    async with _executor(settings, runtime), _executor(settings, runtime):
        jobs = [(await _request(commands, blobs, version, "usr_capped", 0.3))[0] for _ in range(6)]
        await _all_ended(store, jobs, 120)
    spans = sorted(
        (history[1].seq, history[-1].seq)
        for history in [(await store.read_aggregate("job", job_id)).events for job_id in jobs]
    )
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started > ended, spans

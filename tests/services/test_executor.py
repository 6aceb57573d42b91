"""The executor against real NATS, a file blob store and the sandboxed process runtime."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import msgspec
import pytest

from events import (
    EventStore,
    JobCanceled,
    JobStarted,
    JobSucceeded,
)
from services.blobstore import FileBlobStore
from services.domain import Commands
from services.executor._handler import JobHandler
from services.executor._running import RunningJobs
from services.infra.runtime_factory import make_runtime, runtime_work_dir
from services.runtimes.base import Runtime
from services.settings import Settings
from services.subscribers import Delivery
from tests._infra import outputs_written, wait_until
from tests.services._support import (
    ADMIN,
    ModelPackage,
    events_of,
    job_state,
    request_job,
    terminal_events,
    upload_version,
)
from tests.services.conftest import (
    SIGNING_KEY,
    Rig,
    failed_once,
    job_ended,
    running_executor,
    succeeded_at_once,
)

ROOT = Path(__file__).resolve().parents[2]

MODEL = {
    "predict.py": """
import os
import time


def run(input_path, output_dir, params):
    mode = params.get("mode", "echo")
    if mode == "raise":
        raise ValueError("this model always fails")
    if mode == "sleep":
        with open(os.path.join(output_dir, "started"), "w") as f:
            f.write("started")
        time.sleep(float(params.get("seconds", 3600)))
    with open(input_path, "rb") as f:
        data = f.read()
    with open(os.path.join(output_dir, "echo.txt"), "wb") as f:
        f.write(data)
    os.makedirs(os.path.join(output_dir, "sub", "dir"))
    with open(os.path.join(output_dir, "sub", "dir", "size.json"), "w") as f:
        f.write(str(len(data)))
    print("ran", mode)
    return {"bytes": len(data), "mode": mode}
""",
    "requirements.txt": "",
}


@pytest.fixture
async def version(tmp_path: Path, rig: Rig) -> tuple[str, str]:
    """(model_id, version_id) of a built version of MODEL; a builder keeps running."""
    return await rig.built(ModelPackage(tmp_path, MODEL))


def _executor_env(settings: Settings) -> dict[str, str]:
    """The environment of an executor in a process of its own, on the test's services."""
    return {
        **os.environ,
        "CLINAI_DATA_DIR": str(settings.data_dir),
        "CLINAI_NATS_URL": str(settings.nats_url),
        "CLINAI_BLOB_DIR": str(settings.blob_root),
        "CLINAI_SIGNING_KEY": SIGNING_KEY,
        "CLINAI_WORKERS_TOTAL": str(settings.workers_total),
        "CLINAI_WORKER_MEMORY_MB": str(settings.worker_memory_mb),
    }


def _model_started(settings: Settings, job_id: str) -> bool:
    return bool(outputs_written(runtime_work_dir(settings), "started"))  # one job runs


async def _running_model(store: EventStore, settings: Settings, job_id: str) -> None:
    async def started() -> bool:
        state = await job_state(store, job_id)
        return state.status == "running" and _model_started(settings, job_id)

    await wait_until(started, timeout_s=30, what=f"job {job_id} to run its model")


async def test_runs_a_job_and_stores_its_outputs(rig: Rig, version: tuple[str, str]) -> None:
    rig.services.executor()
    job_id = await rig.request_job(version, data=b"pixels")
    events = await rig.ended(job_id, 30)
    done, started = succeeded_at_once(events), events[1]
    assert isinstance(started, JobStarted) and started.attempt == 1 and started.worker
    assert done.result == {"bytes": 6, "mode": "echo"}
    assert sorted((o.name, o.key, o.size_bytes) for o in done.outputs) == [
        ("echo.txt", f"outputs/{job_id}/echo.txt", 6),
        ("sub/dir/size.json", f"outputs/{job_id}/sub/dir/size.json", 1),
    ]
    echo, size = sorted(done.outputs, key=lambda o: o.name)
    assert echo.content_type == "text/plain"
    assert await rig.blobs.get_bytes(echo.key) == b"pixels"
    assert await rig.blobs.get_bytes(size.key) == b"6"
    assert done.log_key == f"logs/jobs/{job_id}.log"
    assert b"ran echo" in await rig.blobs.get_bytes(done.log_key)
    assert done.timings.queued_s >= 0 and done.timings.run_s > 0
    assert done.correlation_id == events[0].correlation_id and done.causation_id == events[0].id


async def test_a_model_error_is_final(rig: Rig, version: tuple[str, str]) -> None:
    rig.services.executor()
    job_id = await rig.request_job(version, {"mode": "raise"})
    events = await rig.ended(job_id, 30)
    failed = failed_once(events, "model_error")
    assert "this model always fails" in failed.message
    assert failed.traceback is not None and "ValueError" in failed.traceback


async def test_cancel_while_running_stops_the_job_within_a_second(
    settings: Settings, rig: Rig, version: tuple[str, str]
) -> None:
    rig.services.executor()
    job_id = await rig.request_job(version, {"mode": "sleep"})
    await _running_model(rig.store, settings, job_id)

    began = time.monotonic()
    await rig.commands.cancel_job(ADMIN, job_id)
    await job_ended(rig.store, job_id, timeout_s=5)
    elapsed = time.monotonic() - began

    history = (await rig.store.read_aggregate("job", job_id)).events
    ended = terminal_events(history)
    assert len(ended) == 1 and isinstance(ended[0], JobCanceled), ended
    assert elapsed < 1.5, f"cancel took {elapsed:.2f} s"


async def test_cancel_before_start_never_runs_the_job(rig: Rig, version: tuple[str, str]) -> None:
    job_id = await rig.request_job(version)
    await rig.commands.cancel_job(ADMIN, job_id)
    rig.services.executor()
    events = await rig.ended(job_id, 30)
    assert not any(isinstance(e, JobStarted) for e in events)
    assert isinstance(events[-1], JobCanceled)


async def test_a_job_whose_executor_dies_ends_exactly_once(
    tmp_path: Path, settings: Settings, rig: Rig, version: tuple[str, str]
) -> None:
    env = _executor_env(settings)
    with (tmp_path / "executor.log").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.services._executor_main",
            cwd=ROOT, env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        job_id = await rig.request_job(version, {"mode": "sleep", "seconds": 2})
        await _running_model(rig.store, settings, job_id)
    finally:
        proc.kill()
        await proc.wait()
    assert not (await job_state(rig.store, job_id)).terminal

    rig.services.executor()  # the message comes back to this one after the ack wait
    await job_ended(rig.store, job_id, timeout_s=30)

    history = (await rig.store.read_aggregate("job", job_id)).events
    ended = terminal_events(history)
    assert len(ended) == 1 and isinstance(ended[0], JobSucceeded), ended
    attempts = [s.event.attempt for s in history if isinstance(s.event, JobStarted)]
    assert attempts == [1, 2]


UNCHECKED_NUL_MODEL = {
    "predict.py": """
import os
import sys

# A hostile model switches the runner's own result check off: the host must refuse the
# result by itself.
for name in ("__main__", "runner.worker"):
    module = sys.modules.get(name)
    if module is not None and hasattr(module, "_check_result"):
        module._check_result = lambda result: None


def run(input_path, output_dir):
    with open(os.path.join(output_dir, "kept.txt"), "w") as f:
        f.write("an output of a job that fails")
    return {"x": "a\\x00b"}
""",
    "requirements.txt": "",
}


async def test_a_result_postgres_cannot_store_fails_the_job_on_the_host(
    tmp_path: Path, rig: Rig
) -> None:
    rig.services.builder()
    rig.services.executor()
    model_id, version_id, _ = await upload_version(
        rig.commands, rig.blobs, ModelPackage(tmp_path, UNCHECKED_NUL_MODEL)
    )
    job_id = await rig.request_job((model_id, version_id))
    events = await rig.ended(job_id)
    failed = failed_once(events, "model_error")
    assert failed.message == (
        "run() returned a result in which $.x contains a NUL character (\\u0000), which "
        "cannot be stored: remove it (or encode binary data, e.g. as base64; large integers "
        "as strings)"
    )
    assert not list(rig.blobs.root.rglob("kept.txt"))  # nothing stored, no copy left behind


async def test_a_result_with_an_integer_beyond_64_bits_fails_the_job(
    tmp_path: Path, rig: Rig
) -> None:
    """Before: the job's `JobSucceeded` was appended, the projector quarantined it (orjson
    refuses such an integer) and the job stayed `running` for good."""
    rig.services.builder()
    rig.services.executor()
    model = {"predict.py": "def run(input_path, output_dir):\n    return {'n': 2**70}\n"}
    model_id, version_id, _ = await upload_version(
        rig.commands, rig.blobs, ModelPackage(tmp_path, {**model, "requirements.txt": ""})
    )
    events = await rig.ended(await rig.request_job((model_id, version_id)))
    failed = failed_once(events, "model_error")
    assert failed.message.startswith(
        "run() returned a result in which $.n is an integer outside the 64-bit range"
    ), failed.message


HANGING_SETUP = {
    "predict.py": """
import time


def setup():
    print("loading the weights", flush=True)
    time.sleep(3600)


def run(input_path, output_dir):
    return {}
""",
    "requirements.txt": "",
}


async def test_cancel_of_a_job_queued_behind_busy_executors_ends_within_a_second(
    settings: Settings, rig: Rig, runtime: Runtime, version: tuple[str, str]
) -> None:
    """Its JobCancelRequested waits in the durable consumer behind the queued job itself;
    every executor also hears it at once and ends a job that has not started."""
    store = rig.store
    async with running_executor(msgspec.structs.replace(settings, workers_total=1), runtime):
        busy = await rig.request_job(version, {"mode": "sleep"})
        await _running_model(store, settings, busy)
        queued = await rig.request_job(version)

        began = time.monotonic()
        await rig.commands.cancel_job(ADMIN, queued)
        elapsed = time.monotonic() - began + await job_ended(store, queued, timeout_s=5)
        assert elapsed < 1.0, f"cancel took {elapsed:.2f} s"
        events = await events_of(store, "job", queued)
        assert not any(isinstance(e, JobStarted) for e in events), events
        assert isinstance(events[-1], JobCanceled)
        assert (await job_state(store, busy)).status == "running"  # the other job runs on

        await rig.commands.cancel_job(ADMIN, busy)
        await job_ended(store, busy, timeout_s=5)
    assert isinstance((await events_of(store, "job", queued))[-1], JobCanceled)  # only once


async def test_a_hanging_setup_fails_the_job_with_setup_timeout(
    tmp_path: Path, settings: Settings, rig: Rig
) -> None:
    version = await rig.built(ModelPackage(tmp_path, HANGING_SETUP))  # no setup() in a build
    quick = msgspec.structs.replace(settings, setup_timeout_s=2.0)
    runtime = await make_runtime(quick)
    try:
        async with running_executor(quick, runtime):
            job_id = await rig.request_job(version, timeout_s=600)
            waited = await job_ended(rig.store, job_id, timeout_s=20)
    finally:
        await runtime.close()
    assert waited < 10, waited
    events = await events_of(rig.store, "job", job_id)
    failed = failed_once(events, "setup_timeout")
    assert "CLINAI_SETUP_TIMEOUT_S" in failed.message
    assert "loading the weights" in failed.message


async def test_a_crashed_executors_job_runs_again_within_5_s(
    tmp_path: Path, settings: Settings, rig: Rig, version: tuple[str, str]
) -> None:
    """With the default consumer options: the first ack wait is short, and the running
    handler's heartbeats keep a live executor's job from being redelivered."""
    store = rig.store
    env = _executor_env(settings)

    async def executor(name: str) -> asyncio.subprocess.Process:
        with (tmp_path / f"{name}.log").open("wb") as out:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.services._executor_main", "--default-consumer",
                cwd=ROOT, env=env, stdout=out, stderr=out,
            )  # fmt: skip

    first = await executor("first")
    second: asyncio.subprocess.Process | None = None
    try:
        job_id = await rig.request_job(version, {"mode": "sleep", "seconds": 8})
        await _running_model(store, settings, job_id)
        second = await executor("second")
        # Longer than the first ack wait: heartbeats keep the job where it runs.
        await wait_until(
            lambda: (tmp_path / "second.log").read_text().count("consuming") > 0,
            timeout_s=30,
            what="the second executor to consume",
        )
        started = time.monotonic()
        await wait_until(lambda: time.monotonic() - started > 4, what="4 s", timeout_s=10)
        attempts = [
            e.attempt for e in await events_of(store, "job", job_id) if isinstance(e, JobStarted)
        ]
        assert attempts == [1]

        first.kill()
        await first.wait()
        killed = time.monotonic()

        async def started_again() -> bool:
            events = await events_of(store, "job", job_id)
            return any(isinstance(e, JobStarted) and e.attempt == 2 for e in events)

        await wait_until(started_again, timeout_s=30, what="the job to start again")
        assert time.monotonic() - killed < 5.0
        await job_ended(store, job_id, timeout_s=30)
        assert isinstance(
            terminal_events((await store.read_aggregate("job", job_id)).events)[0], JobSucceeded
        )
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_job_redelivered_while_it_runs_here_is_decided_when_that_run_ends(
    tmp_path: Path,
    settings: Settings,
    store: EventStore,
    commands: Commands,
    blobs: FileBlobStore,
    runtime: Runtime,
    version: tuple[str, str],
) -> None:
    """The redelivery is not acked at once: had that run then failed to append its end
    (NATS restarting under it), its nak would answer the older delivery, which the
    server ignores, and the job would be lost. It waits for the run, then reads the log."""
    model_id, version_id = version
    handler = JobHandler(
        store=store,
        blobs=blobs,
        runtime=runtime,
        local=RunningJobs(),
        work_dir=tmp_path / "work",
        worker_id="test",
        max_attempts=3,
        max_timeout_s=60,
    )
    job_id = await request_job(
        commands,
        blobs,
        model_id=model_id,
        version_id=version_id,
        params={"mode": "sleep", "seconds": 2},
    )
    history = (await store.read_aggregate("job", job_id)).events
    requested = history[0]

    def delivery(n: int) -> Delivery:
        return Delivery(event=requested.event, seq=requested.seq, num_delivered=n, max_deliver=5)

    first = asyncio.create_task(handler(delivery(1)))
    await _running_model(store, settings, job_id)
    second = asyncio.create_task(handler(delivery(2)))
    done, _ = await asyncio.wait({second}, timeout=0.5)
    assert not done  # it waits for the run here instead of being acked
    await asyncio.wait_for(first, 30)
    await asyncio.wait_for(second, 30)
    history = (await store.read_aggregate("job", job_id)).events
    assert [type(e) for e in terminal_events(history)] == [JobSucceeded]
    assert [s.event.attempt for s in history if isinstance(s.event, JobStarted)] == [1]

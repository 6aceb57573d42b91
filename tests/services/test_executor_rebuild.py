"""An executor on another host than its builder: no shared runtime folder, only the log
and the blob store. It rebuilds the version's artifact from the package, once."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import msgspec

from events import JobFailed, VersionBuilt, VersionUploaded
from services.builder import run_builder
from services.infra.runtime_factory import make_runtime, runtime_work_dir
from services.settings import Settings
from tests.services._support import FAST_CONSUMER, ModelPackage, events_of
from tests.services.conftest import Rig, build_ended, running_executor, succeeded_at_once
from tests.services.test_executor import MODEL


def _host(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """The same NATS and blob store, a data folder (and so a runtime folder) of its own."""
    return msgspec.structs.replace(settings, data_dir=tmp_path / name)


async def _built_elsewhere(settings: Settings, rig: Rig, tmp_path: Path) -> tuple[str, str]:
    """A version of MODEL built by a builder on a host of its own, whose runtime folder
    is then gone (another machine's disk)."""
    there = _host(settings, tmp_path, "builder-host")
    runtime = await make_runtime(there)
    stop = asyncio.Event()
    builder = asyncio.create_task(
        run_builder(there, runtime=runtime, stop=stop, consumer=FAST_CONSUMER)
    )
    try:
        model_id, version_id = await rig.upload(ModelPackage(tmp_path / "pkg", MODEL))
        await build_ended(rig.store, version_id)
    finally:
        stop.set()
        await asyncio.wait_for(builder, 15)
        await runtime.close()
    shutil.rmtree(runtime_work_dir(there))
    return model_id, version_id


async def test_an_executor_without_the_builders_folder_rebuilds_the_artifact_once(
    settings: Settings, rig: Rig, tmp_path: Path
) -> None:
    version = await _built_elsewhere(settings, rig, tmp_path)
    built = (await events_of(rig.store, "version", version[1]))[-1]
    assert isinstance(built, VersionBuilt)
    assert not await asyncio.to_thread(Path(built.artifact).exists)
    here = _host(settings, tmp_path, "executor-host")
    local_root = runtime_work_dir(here)

    runtime = await make_runtime(here)
    try:
        async with running_executor(here, runtime):
            first = await rig.request_job(version, data=b"abc")
            succeeded = succeeded_at_once(await rig.ended(first, wait_s=120))
            assert succeeded.result == {"bytes": 3, "mode": "echo"}
            rebuilt = sorted(p.name for p in (local_root / "artifacts").iterdir())
            assert rebuilt == [built.artifact_details["package_hash"]]

            second = await rig.request_job(version, data=b"abcd")
            succeeded = succeeded_at_once(await rig.ended(second))
            assert succeeded.result == {"bytes": 4, "mode": "echo"}
            # Still the one artifact: the second job ran on what the first rebuilt.
            assert sorted(p.name for p in (local_root / "artifacts").iterdir()) == rebuilt
    finally:
        await runtime.close()


async def test_a_package_that_cannot_be_fetched_fails_the_job_as_infrastructure(
    settings: Settings, rig: Rig, tmp_path: Path
) -> None:
    version = await _built_elsewhere(settings, rig, tmp_path)
    uploaded = (await events_of(rig.store, "version", version[1]))[0]
    assert isinstance(uploaded, VersionUploaded)
    await rig.blobs.delete(uploaded.package_key)
    here = _host(settings, tmp_path, "executor-host")

    runtime = await make_runtime(here)
    try:
        async with running_executor(here, runtime):
            job_id = await rig.request_job(version)
            events = await rig.ended(job_id, wait_s=60)
    finally:
        await runtime.close()
    failed = events[-1]
    assert isinstance(failed, JobFailed), events
    assert failed.kind == "infrastructure"
    assert "not on this executor's host" in failed.message
    assert uploaded.package_key in failed.message

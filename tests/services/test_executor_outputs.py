"""The executor and a job's outputs: over a limit, or with a name that cannot be stored,
the job fails once with kind `output_limit` and nothing of its outputs is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from events import EventStore, JobFailed, JobStarted, JobSucceeded
from services.blobstore import FileBlobStore
from services.domain import Commands
from services.settings import Settings
from tests._infra import wait_until
from tests.services._support import (
    ModelPackage,
    events_of,
    job_state,
    request_job,
)
from tests.services.conftest import Services, built_version

MODEL = {
    "predict.py": """
import os


def run(input_path, output_dir, params):
    for name_hex in params.get("names_hex", []):
        with open(os.path.join(os.fsencode(output_dir), bytes.fromhex(name_hex)), "wb") as f:
            f.write(b"output")
    print("wrote", len(params.get("names_hex", [])))
    return {"wrote": len(params.get("names_hex", []))}
""",
    "requirements.txt": "",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, max_output_files=3)


@pytest.fixture
async def version(
    tmp_path: Path, store: EventStore, commands: Commands, blobs: FileBlobStore, services: Services
) -> AsyncIterator[tuple[str, str]]:
    services.builder()
    model_id, version_id = await built_version(
        ModelPackage(tmp_path, MODEL), store, commands, blobs
    )
    yield model_id, version_id


async def _run(
    store: EventStore,
    commands: Commands,
    blobs: FileBlobStore,
    services: Services,
    version: tuple[str, str],
    names: list[bytes],
) -> tuple[str, list[object]]:
    services.executor()
    model_id, version_id = version
    job_id = await request_job(
        commands,
        blobs,
        model_id=model_id,
        version_id=version_id,
        params={"names_hex": [name.hex() for name in names]},
    )

    async def ended() -> bool:
        return (await job_state(store, job_id)).terminal

    await wait_until(ended, timeout_s=60, what=f"job {job_id} to end")
    return job_id, list(await events_of(store, "job", job_id))


async def test_outputs_over_the_count_limit_fail_the_job_once_and_store_nothing(
    store: EventStore,
    commands: Commands,
    blobs: FileBlobStore,
    services: Services,
    version: tuple[str, str],
) -> None:
    names = [b"a.txt", b"b.txt", b"c.txt", b"d.txt"]
    job_id, events = await _run(store, commands, blobs, services, version, names)
    failed = events[-1]
    assert isinstance(failed, JobFailed), failed
    assert failed.kind == "output_limit" and failed.attempts == 1
    assert "more than 3 files and folders" in failed.message
    assert "CLINAI_MAX_OUTPUT_FILES" in failed.message
    assert sum(isinstance(e, JobStarted) for e in events) == 1  # not retried
    assert await blobs.list(f"outputs/{job_id}/") == []
    assert failed.log_key is not None and b"wrote 4" in await blobs.get_bytes(failed.log_key)


async def test_outputs_whose_names_cannot_be_stored_fail_the_job_naming_them(
    store: EventStore,
    commands: Commands,
    blobs: FileBlobStore,
    services: Services,
    version: tuple[str, str],
) -> None:
    names = [b"new\nline.txt", b"bad-\xff.txt", b"fine.txt"]
    job_id, events = await _run(store, commands, blobs, services, version, names)
    failed = events[-1]
    assert isinstance(failed, JobFailed), failed
    assert failed.kind == "output_limit" and failed.attempts == 1
    assert "'new\\nline.txt' (it holds a backslash or a control character)" in failed.message
    assert "'bad-\\udcff.txt' (it is not valid UTF-8)" in failed.message
    assert "fine.txt" not in failed.message
    assert failed.message.isascii()  # the names are escaped: safe for any store
    assert await blobs.list(f"outputs/{job_id}/") == []


async def test_outputs_within_the_limits_are_stored(
    store: EventStore,
    commands: Commands,
    blobs: FileBlobStore,
    services: Services,
    version: tuple[str, str],
) -> None:
    job_id, events = await _run(store, commands, blobs, services, version, [b"x.txt", b"y.txt"])
    done = events[-1]
    assert isinstance(done, JobSucceeded), done
    assert sorted(o.name for o in done.outputs) == ["x.txt", "y.txt"]
    assert sorted(await blobs.list(f"outputs/{job_id}/")) == [
        f"outputs/{job_id}/x.txt",
        f"outputs/{job_id}/y.txt",
    ]

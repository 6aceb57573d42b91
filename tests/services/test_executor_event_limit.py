"""An outcome the event log cannot take (larger than the server's max_payload) fails the
job once with a clear kind, instead of a NATS MaxPayloadError crash loop. The server
here takes 128 KiB messages, while results up to 256 KiB are kept in the event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from events import EventStore, JobFailed
from services.blobstore import FileBlobStore
from services.domain import Commands
from services.settings import Settings
from tests._infra import wait_until
from tests._small_nats import small_nats
from tests.services._support import (
    ModelPackage,
    events_of,
    job_state,
    request_job,
    upload_version,
    version_state,
)
from tests.services.conftest import Services

MAX_PAYLOAD = 128 * 1024
MODEL = {
    "predict.py": "def run(input_path, output_dir, params):\n"
    "    return {'blob': 'x' * int(params['size'])}\n",
    "requirements.txt": "",
}


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """Overrides the suite's: a server whose max_payload is 128 KiB."""
    with small_nats(tmp_path / "small-nats", MAX_PAYLOAD) as url:
        yield url


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, result_inline_bytes=256 * 1024)


async def test_an_outcome_larger_than_the_log_takes_fails_the_job_once(
    tmp_path: Path,
    store: EventStore,
    commands: Commands,
    blobs: FileBlobStore,
    services: Services,
) -> None:
    assert store.max_message_bytes == MAX_PAYLOAD
    services.builder()
    model_id, version_id, _ = await upload_version(commands, blobs, ModelPackage(tmp_path, MODEL))

    async def built() -> bool:
        return (await version_state(store, version_id)).status in ("ready", "failed")

    await wait_until(built, timeout_s=60, what="the build")
    services.executor()
    job_id = await request_job(
        commands, blobs, model_id=model_id, version_id=version_id, params={"size": 200 * 1024}
    )

    async def ended() -> bool:
        return (await job_state(store, job_id)).terminal

    await wait_until(ended, timeout_s=30, what=f"job {job_id} to end")
    events = await events_of(store, "job", job_id)
    assert [type(e).__name__ for e in events] == ["JobRequested", "JobStarted", "JobFailed"]
    failed = events[-1]
    assert isinstance(failed, JobFailed) and failed.kind == "output_limit"
    assert failed.attempts == 1
    assert f"more than the event log takes ({MAX_PAYLOAD} bytes)" in failed.message
    services.check()  # the executor is still running

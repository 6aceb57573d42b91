"""An outcome the event log cannot take (larger than the server's max_payload) fails the
job once with a clear kind, instead of a NATS MaxPayloadError crash loop. The server
here takes 128 KiB messages, while results up to 256 KiB are kept in the event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from services.settings import Settings
from tests._small_nats import small_nats
from tests.services._support import (
    ModelPackage,
)
from tests.services.conftest import Rig, failed_once

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
    tmp_path: Path, rig: Rig
) -> None:
    assert rig.store.max_message_bytes == MAX_PAYLOAD
    version = await rig.built(ModelPackage(tmp_path, MODEL))
    rig.services.executor()
    job_id = await rig.request_job(version, {"size": 200 * 1024})
    events = await rig.ended(job_id, 30)
    failed = failed_once(events, "output_limit")
    assert f"more than the event log takes ({MAX_PAYLOAD} bytes)" in failed.message
    rig.services.check()  # the executor is still running

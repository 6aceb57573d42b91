"""Storing a job's outputs (`upload_outputs`) on both blob backends: several at once,
listed in the job's order, each intact; when one fails, the others stop, nothing is
listed, and no scratch copy is left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.blobstore import BlobStore, BlobUnavailableError, FileBlobStore
from services.executor._files import UPLOADS_AT_ONCE, output_key, upload_outputs
from services.runtimes.base import OutputCopy
from tests._infra import wait_until
from tests._s3 import s3_store

JOB = "job_uploads"


@pytest.fixture(params=["file", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "file":
        instance: BlobStore = FileBlobStore(tmp_path / "blobs", "http://testserver", b"k" * 32)
    else:
        instance = await s3_store(request.getfixturevalue("s3_endpoint"), tmp_path / "spool")
    try:
        yield instance
    finally:
        await instance.close()


class Watched:
    """A real store whose `move_in` calls are counted while they run; `fail_key`'s
    upload fails as an outage would, once another upload is under way beside it."""

    def __init__(self, blobs: BlobStore, fail_key: str | None = None) -> None:
        self.blobs = blobs
        self.fail_key = fail_key
        self.in_flight = 0
        self.most_in_flight = 0
        self.begun: list[str] = []

    async def move_in(self, key: str, path: Path, content_type: str) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.begun.append(key)
        try:
            if key == self.fail_key:
                await wait_until(
                    lambda: self.in_flight > 1, what="another upload beside it", timeout_s=5
                )
                # `path` is left in place: upload_outputs removes every copy itself.
                raise BlobUnavailableError(
                    "the test's store", "unreachable", "connection refused", hint="retry"
                )
            await self.blobs.move_in(key, path, content_type)
        finally:
            self.in_flight -= 1


async def _copies(blobs: BlobStore, count: int) -> list[OutputCopy]:
    spool = await blobs.spool_dir()
    copies = []
    for number in range(count):
        path = spool / f"copy-{number}"
        path.write_bytes(f"output {number}".encode() * (number + 1))
        copies.append(OutputCopy(name=f"out-{number:02d}.txt", path=path))
    return copies


async def test_many_outputs_are_stored_several_at_once_listed_in_order(
    backend: BlobStore,
) -> None:
    copies = await _copies(backend, 24)
    watched = Watched(backend)
    stored = await upload_outputs(watched, JOB, copies)  # type: ignore[arg-type]
    assert watched.most_in_flight == UPLOADS_AT_ONCE > 1
    assert [output.name for output in stored] == [copy.name for copy in copies]
    for number, output in enumerate(stored):
        assert output.key == output_key(JOB, output.name)
        assert output.content_type == "text/plain"
        content = f"output {number}".encode() * (number + 1)
        assert output.size_bytes == len(content)
        assert await backend.get_bytes(output.key) == content  # s3: its SHA-256 checked
    assert not any(copy.path.exists() for copy in copies)


async def test_a_failed_upload_stops_the_others_and_lists_nothing(backend: BlobStore) -> None:
    copies = await _copies(backend, 24)
    watched = Watched(backend, fail_key=output_key(JOB, copies[2].name))
    with pytest.raises(BlobUnavailableError, match="connection refused"):
        await upload_outputs(watched, JOB, copies)  # type: ignore[arg-type]
    assert watched.most_in_flight > 1
    assert watched.in_flight == 0  # the uploads under way were awaited, none left running
    assert len(watched.begun) < len(copies)  # none begun after the failure
    assert not any(copy.path.exists() for copy in copies)  # every scratch copy removed
    stored = await backend.list(f"outputs/{JOB}/")
    assert output_key(JOB, copies[2].name) not in stored
    assert set(stored) <= set(watched.begun)

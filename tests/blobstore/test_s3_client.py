"""The s3 backend's client settings that spare each request work: a small PUT sent
whole at once (no `Expect: 100-continue`), timestamps parsed as botocore parses them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from botocore.utils import parse_timestamp

from services.blobstore import S3BlobStore
from services.blobstore._s3_client import EXPECT_FROM, parse_s3_timestamp
from tests._infra import http_files
from tests._s3 import s3_session


async def test_a_small_put_does_not_wait_for_100_continue(tmp_path: Path) -> None:
    seen: list[tuple[str | None, int]] = []

    async def put(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Expect"), len(await request.content.read())))
        return web.Response()

    async with http_files(put, method="PUT") as url:
        store = S3BlobStore(bucket="b-1", spool=tmp_path, endpoint_url=url, session=s3_session())
        try:
            await store.put_bytes("small", b"x" * 1000, "text/plain")
            await store.put_bytes("large", b"x" * EXPECT_FROM, "text/plain")
            writer = await store.open_writer("written", "text/plain")
            await writer.write(b"y" * 10)
            await writer.commit()
        finally:
            await store.close()
    assert seen == [(None, 1000), ("100-continue", EXPECT_FROM), (None, 10)]


@pytest.mark.parametrize(
    "value",
    [
        "Thu, 03 Dec 2026 15:08:31 GMT",  # Last-Modified
        "Thu, 03 Dec 2026 15:08:31 -0000",
        "2026-12-03T15:08:31.000Z",  # LastModified in a listing
        "2026-12-03T15:08:31.123456+02:00",
        "2026-12-03T15:08:31",
        "1764774511",  # epoch seconds
        "1764774511.5",
    ],
)
def test_timestamps_are_read_as_botocore_reads_them(value: str) -> None:
    ours, theirs = parse_s3_timestamp(value), parse_timestamp(value)
    assert isinstance(ours, datetime) and ours.tzinfo is not None
    assert ours.timestamp() == theirs.timestamp()


def test_a_timestamp_botocore_refuses_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_timestamp("not a date")
    with pytest.raises(ValueError):
        parse_s3_timestamp("not a date")

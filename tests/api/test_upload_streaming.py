"""Uploads through the API on the s3 backend go to S3 as they arrive (a package, a job's
input): parts are in the bucket while the client is still sending; the object appears
at the end with its SHA-256; a client that disconnects, or a body over the limit (413
mid-stream), leaves nothing in the bucket. Bodies are sent by hand on a raw connection,
so the tests decide when each byte leaves."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from tests._infra import wait_until
from tests._s3 import create_bucket, s3_env, s3_session
from tests.api._client import Client, new_user
from tests.api.conftest import Stack, running_stack

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
MIB = 1024 * 1024
MAX_INPUT = 24 * MIB
PART = 8 * MIB  # the store's part size (S3BlobStore's default)
_MARKER = b"@@streamed-file@@"


@pytest.fixture(scope="module")
def s3_stack(stack_env: dict[str, str], s3_endpoint: str) -> Iterator[tuple[Stack, str]]:
    bucket = asyncio.run(create_bucket(s3_endpoint))
    env = {
        **stack_env,
        **s3_env(s3_endpoint, bucket),
        "CLINAI_MAX_PACKAGE_BYTES": str(40 * MIB),
        "CLINAI_MAX_INPUT_BYTES": str(MAX_INPUT),
    }
    with running_stack(env, ["projector", "api"]) as running:
        yield running, bucket


async def _bucket(endpoint: str, bucket: str) -> tuple[list[str], list[str]]:
    """The bucket's objects and its open multipart uploads (their keys)."""
    async with s3_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint
    ) as s3:
        objects = await s3.list_objects_v2(Bucket=bucket)
        uploads = await s3.list_multipart_uploads(Bucket=bucket)
    return (
        [item["Key"] for item in objects.get("Contents", [])],
        [item["Key"] for item in uploads.get("Uploads", [])],
    )


def _form(fields: dict[str, str], field: str, filename: str) -> tuple[str, bytes, bytes]:
    """A multipart form's content type, and its bytes before and after one file."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    return (
        f"multipart/form-data; boundary={boundary}",
        "".join(parts).encode(),
        f"\r\n--{boundary}--\r\n".encode(),
    )


class _Upload:
    """One POST whose body the test sends piece by piece (chunked when no length)."""

    def __init__(
        self, url: str, key: str, path: str, content_type: str, length: int | None
    ) -> None:
        self._url = urlsplit(url)
        self._head = [
            f"POST {path} HTTP/1.1",
            "Host: test",
            f"Authorization: Bearer {key}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
            "Connection: close",
            "",
            "",
        ]
        self._chunked = length is None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> _Upload:
        self._reader, self._writer = await asyncio.open_connection(
            self._url.hostname, self._url.port
        )
        self._writer.write("\r\n".join(self._head).encode())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.transport.abort()  # closed already unless the test failed

    async def send(self, data: bytes, piece: int = 256 * 1024) -> None:
        assert self._writer is not None
        for start in range(0, len(data), piece):
            chunk = data[start : start + piece]
            self._writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self._chunked else chunk)
            await self._writer.drain()

    async def reply(self) -> tuple[int, dict[str, object]]:
        assert self._reader is not None and self._writer is not None
        if self._chunked:
            self._writer.write(b"0\r\n\r\n")
        raw = await asyncio.wait_for(self._reader.read(), 60)
        self._writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), msgspec.json.decode(body)

    def disconnect(self) -> None:
        assert self._writer is not None
        self._writer.transport.abort()


async def _user(stack: Stack) -> Client:
    return await new_user(stack.url, stack.admin_key, f"streamer-{uuid.uuid4().hex[:6]}")


async def _parts_arrive(endpoint: str, bucket: str) -> None:
    async def uploading() -> bool:
        return bool((await _bucket(endpoint, bucket))[1])

    await wait_until(uploading, what="a multipart upload open in the bucket", timeout_s=30)


async def _nothing_left(endpoint: str, bucket: str, prefix: str) -> None:
    async def empty() -> bool:
        objects, uploads = await _bucket(endpoint, bucket)
        return not uploads and not [k for k in objects if k.startswith((prefix, ".incoming/"))]

    await wait_until(empty, what=f"no upload and no object under {prefix} left", timeout_s=30)


async def test_a_package_goes_to_s3_as_it_arrives_and_keeps_its_sha256(
    s3_stack: tuple[Stack, str], s3_endpoint: str
) -> None:
    stack, bucket = s3_stack
    client = await _user(stack)
    model = (await client.post("/v1/models", json={"name": f"big-{uuid.uuid4().hex[:6]}"})).body
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w", zipfile.ZIP_STORED) as archive:
        for source in sorted((PACKAGES / "noop").iterdir()):
            archive.write(source, source.name)
        archive.writestr("weights.bin", os.urandom(3 * PART))
    data = package.getvalue()
    content_type, head, tail = _form({}, "package", "p.zip")
    upload = _Upload(
        stack.url,
        client.key or "",
        f"/v1/models/{model['id']}/versions",
        content_type,
        len(head) + len(data) + len(tail),
    )
    async with upload:
        await upload.send(head + data[: 2 * PART + MIB])
        await _parts_arrive(s3_endpoint, bucket)  # before the client has sent it all
        await upload.send(data[2 * PART + MIB :] + tail)
        status, version = await upload.reply()
    assert status == 201, version
    key = f"packages/{version['id']}/package.zip"
    async with s3_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=s3_endpoint
    ) as s3:
        stored = await s3.head_object(Bucket=bucket, Key=key)
    assert stored["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored["ContentLength"] == len(data)
    objects, uploads = await _bucket(s3_endpoint, bucket)
    assert key in objects and not [k for k in objects if k.startswith(".incoming/")]
    assert uploads == []


async def test_a_client_that_disconnects_mid_upload_leaves_nothing(
    s3_stack: tuple[Stack, str], s3_endpoint: str
) -> None:
    stack, bucket = s3_stack
    client = await _user(stack)
    content_type, head, tail = _form({"version": "ver_none"}, "input", "in.bin")
    size = 3 * PART
    upload = _Upload(
        stack.url, client.key or "", "/v1/jobs", content_type, len(head) + size + len(tail)
    )
    async with upload:
        await upload.send(head + os.urandom(2 * PART + MIB))
        await _parts_arrive(s3_endpoint, bucket)
        upload.disconnect()
    await _nothing_left(s3_endpoint, bucket, "inputs/")


async def test_an_input_over_the_limit_is_a_413_mid_stream_and_leaves_nothing(
    s3_stack: tuple[Stack, str], s3_endpoint: str
) -> None:
    stack, bucket = s3_stack
    client = await _user(stack)
    content_type, head, _ = _form({"version": "ver_none"}, "input", "in.bin")
    upload = _Upload(stack.url, client.key or "", "/v1/jobs", content_type, None)
    async with upload:
        await upload.send(head + os.urandom(2 * PART + MIB))
        await _parts_arrive(s3_endpoint, bucket)
        await upload.send(os.urandom(MAX_INPUT - (2 * PART + MIB) + 1))  # one byte too many
        status, problem = await upload.reply()
    assert status == 413, problem
    assert str(MAX_INPUT) in str(problem["detail"])
    await _nothing_left(s3_endpoint, bucket, "inputs/")


async def test_a_text_field_sent_as_a_file_is_refused_not_ignored(
    s3_stack: tuple[Stack, str], s3_endpoint: str
) -> None:
    stack, bucket = s3_stack
    client = await _user(stack)
    # `params` as a file: before, stored and then silently ignored (the job ran without).
    reply = await client.upload(
        "/v1/jobs", "params", "params.json", b'{"size": 3}', input="x", version="ver_none"
    )
    assert reply.status == 422, reply.body
    assert reply.body["title"] == "Not a file field" and "params" in reply.body["detail"]
    await _nothing_left(s3_endpoint, bucket, "inputs/")

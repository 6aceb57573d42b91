"""A real S3 server for the tests: moto's server mode on a free port (it speaks the S3
HTTP protocol, so aiobotocore's own client code runs), plus a bucket per test."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiobotocore.session import AioSession, get_session

from services.blobstore import S3BlobStore
from tests._infra import free_port, serving

__all__ = [
    "ACCESS_KEY",
    "SECRET_KEY",
    "Gate",
    "create_bucket",
    "raw",
    "s3_env",
    "s3_server",
    "s3_session",
    "s3_store",
]

# moto takes any credentials unless its IAM checks are on (`s3_server(auth=True)`).
ACCESS_KEY = "clinai-test-key"
SECRET_KEY = "clinai-test-secret"
_buckets = itertools.count(1)


@contextmanager
def s3_server(*, auth: bool = False) -> Iterator[str]:
    """`http://127.0.0.1:PORT` of a moto S3 server for the block. `auth`: it checks
    credentials (every access key is then unknown to it: refused)."""
    port = free_port()
    env = {**os.environ, "MOTO_PORT": str(port)}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with serving(
        argv,
        port,
        what="the moto S3 server",
        env=env,
        # Not a pipe: moto logs every request there, and a pipe nobody reads fills up
        # and stops the server.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ):
        yield f"http://127.0.0.1:{port}"


def s3_session(access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> AioSession:
    session = get_session()
    session.set_credentials(access_key, secret_key)
    return session


async def create_bucket(endpoint: str, name: str | None = None) -> str:
    """A new bucket on the server (a fresh name unless given); its name."""
    name = name or f"clinai-test-{os.getpid()}-{next(_buckets)}"
    async with s3_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint
    ) as client:
        await client.create_bucket(Bucket=name)
    return name


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    """The environment of services on the s3 backend (credentials the AWS way)."""
    return {
        "CLINAI_BLOB_BACKEND": "s3",
        "CLINAI_S3_ENDPOINT_URL": endpoint,
        "CLINAI_S3_BUCKET": bucket,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }


async def s3_store(endpoint: str, spool: Path, **options: object) -> S3BlobStore:
    """A store on a fresh bucket of the server at `endpoint`."""
    bucket = await create_bucket(endpoint)
    return S3BlobStore(
        bucket=bucket,
        spool=spool,
        endpoint_url=endpoint,
        session=s3_session(),
        **options,  # type: ignore[arg-type]
    )


class Gate:
    """A TCP proxy on a free port in front of the S3 server, in its own thread: `close()`
    stops it listening and cuts the connections open through it (to the clients, the
    server is down: refused), `open()` listens again on the same port. The objects stay
    on the server (moto keeps them in memory only: stopping it would lose them)."""

    def __init__(self, upstream: str) -> None:
        self._upstream_port = int(upstream.rsplit(":", 1)[1])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def open(self) -> None:
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)

    def stop(self) -> None:
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


async def raw(endpoint: str, method: str, **params: Any) -> Any:
    """One call of a plain client, beside the store (as another writer would)."""
    async with s3_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint
    ) as client:
        return await getattr(client, method)(**params)

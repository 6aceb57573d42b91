"""The S3 side of the benchmarks: a moto server started for the run when no endpoint is
given (moto's server mode, from the dev dependencies), a bucket, and the environment
that puts a `clinai up` stack on it. moto's own server closes every connection after
one request; `keep_alive` serves moto's app by uvicorn instead (`bench._moto_app`),
which keeps connections open between requests, as S3 and MinIO do."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from aiobotocore.session import get_session

from bench._proc import wait_listening

__all__ = ["s3_stack_env"]

# moto takes any credentials; a given endpoint uses the caller's own (AWS_* variables).
_MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


@contextmanager
def _moto(keep_alive: bool) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    if keep_alive:
        argv = [sys.executable, "-m", "uvicorn", "--factory", "--interface", "wsgi"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        argv += ["--no-access-log", "bench._moto_app:app"]
    env = {**os.environ, "MOTO_PORT": str(port)}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_listening(proc, port, "the moto S3 server")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def _create_bucket(endpoint: str, bucket: str, env: dict[str, str]) -> None:
    session = get_session()
    session.set_credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    async with session.create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint
    ) as client:
        await client.create_bucket(Bucket=bucket)


@contextmanager
def s3_stack_env(
    endpoint: str | None, bucket: str | None, *, keep_alive: bool = False
) -> Iterator[dict[str, str]]:
    """CLINAI_* (and, for moto, AWS_*) variables for a stack on the s3 backend: on
    `endpoint` and `bucket` when given (the bucket must exist), else on a moto server
    (`keep_alive`: served by uvicorn) and a new bucket, both for the block."""
    if endpoint is not None:
        yield {
            "CLINAI_BLOB_BACKEND": "s3",
            "CLINAI_S3_ENDPOINT_URL": endpoint,
            "CLINAI_S3_BUCKET": bucket or os.environ.get("CLINAI_S3_BUCKET", "clinai"),
        }
        return
    with _moto(keep_alive) as moto:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        asyncio.run(_create_bucket(moto, name, _MOTO_CREDENTIALS))
        yield {
            "CLINAI_BLOB_BACKEND": "s3",
            "CLINAI_S3_ENDPOINT_URL": moto,
            "CLINAI_S3_BUCKET": name,
            **_MOTO_CREDENTIALS,
        }

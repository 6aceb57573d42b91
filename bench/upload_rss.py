"""How much memory a large input costs the API: one job submitted with a 1 GiB input
through `clinai up`, the API processes' resident memory sampled while it streams in and
goes to the blob store.

    python -m bench.upload_rss [--blob-backend s3|file] [--mib 1024] [--s3-endpoint URL]
    python -m bench.upload_rss --package [--mib 256] ...

`--package`: a model package of that size uploaded instead (a zip holding the no-op
model and a file of random bytes, stored uncompressed), timed: the upload's throughput
and the API's growth; no job runs.

Prints the API's RSS before the upload, its peak during it (until the submission is
answered: the input is then in the store) and the growth, and the same for the executor
while it fetches the input for the job (a no-op model). The body is generated as it is
sent (a 1 MiB random block repeated), never held whole by the client either. The
issue's bound: the API grows by less than 64 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bench._http import multipart
from bench._proc import descendants
from bench._s3 import s3_stack_env
from bench.jobs import NOOP, UpStack
from events import TERMINAL_JOB_STATUSES
from services.packages import zip_folder

_MIB = 1024 * 1024
_MARKER = b"@@clinai-bench-input@@"


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _service_pids(stack_pid: int, service: str) -> list[int]:
    needle = f"serve {service}".encode()
    pids = []
    for pid in descendants(stack_pid):
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "):
                pids.append(pid)
    return pids


class _Peak:
    """The highest summed RSS of some processes, sampled every 10 ms in the background."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before = self.now()
        self.peak = self.before
        self._task: asyncio.Task[None] | None = None

    def now(self) -> int:
        return sum(_rss_bytes(pid) for pid in self.pids)

    async def __aenter__(self) -> _Peak:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak = max(self.peak, self.now())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            await asyncio.sleep(0.01)  # sampling interval


async def _body(head: bytes, mib: int, tail: bytes) -> AsyncIterator[bytes]:
    block = os.urandom(_MIB)
    yield head
    for _ in range(mib):
        yield block
    yield tail


def _package(folder: Path, mib: int) -> Path:
    """A package zip of about `mib` MiB in `folder`: the no-op model and random bytes."""
    path = folder / "package.zip"
    block = os.urandom(_MIB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for source in sorted(NOOP.iterdir()):
            archive.write(source, source.name)
        with archive.open("weights.bin", "w", force_zip64=True) as out:
            for _ in range(mib):
                out.write(block)
    return path


async def _file_body(head: bytes, path: Path, tail: bytes) -> AsyncIterator[bytes]:
    yield head
    with path.open("rb") as fh:
        while block := fh.read(_MIB):
            yield block
    yield tail


async def _run_package(stack: UpStack, mib: int) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {stack.key}"}
    async with aiohttp.ClientSession(stack.url, headers=auth) as http:
        async with http.post("/v1/models", json={"name": f"rss-{uuid.uuid4().hex[:8]}"}) as r:
            model = await r.json()
        with tempfile.TemporaryDirectory(prefix="bench-package-") as folder:
            package = await asyncio.to_thread(_package, Path(folder), mib)
            size = package.stat().st_size
            content_type, body = multipart({}, {"package": ("p.zip", _MARKER, "application/zip")})
            head, tail = body.split(_MARKER)
            headers = {
                "Content-Type": content_type,
                "Content-Length": str(len(body) - len(_MARKER) + size),
            }
            api = _Peak(_service_pids(stack.pid, "api"))
            started = time.perf_counter()
            async with api:
                async with http.post(
                    f"/v1/models/{model['id']}/versions",
                    data=_file_body(head, package, tail),
                    headers=headers,
                ) as r:
                    version = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"upload refused: {r.status} {version}")
                uploaded = time.perf_counter() - started
    return {
        "upload_s": uploaded,
        "upload_mib_per_s": size / _MIB / uploaded,
        "api_rss_before_mib": api.before / _MIB,
        "api_rss_peak_mib": api.peak / _MIB,
        "api_growth_mib": (api.peak - api.before) / _MIB,
    }


async def _run(stack: UpStack, mib: int) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {stack.key}"}
    async with aiohttp.ClientSession(stack.url, headers=auth) as http:
        async with http.post("/v1/models", json={"name": f"rss-{uuid.uuid4().hex[:8]}"}) as r:
            model = await r.json()
        form = aiohttp.FormData()
        form.add_field("package", zip_folder(NOOP), filename="p.zip")
        async with http.post(f"/v1/models/{model['id']}/versions", data=form) as r:
            version = await r.json()
        while version["status"] not in ("ready", "failed"):
            await asyncio.sleep(0.1)  # polling interval while it builds
            async with http.get(f"/v1/versions/{version['id']}") as r:
                version = await r.json()
        content_type, body = multipart(
            {"version": version["id"]}, {"input": ("big.bin", _MARKER, "application/octet-stream")}
        )
        head, tail = body.split(_MARKER)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body) - len(_MARKER) + mib * _MIB),
        }
        api = _Peak(_service_pids(stack.pid, "api"))
        executor = _Peak(_service_pids(stack.pid, "executor"))
        started = time.perf_counter()
        async with api, executor:
            async with http.post("/v1/jobs", data=_body(head, mib, tail), headers=headers) as r:
                created = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"submission refused: {r.status} {created}")
            submitted = time.perf_counter() - started
            api_peak = max(api.peak, api.now())
            job = created
            while job["status"] not in TERMINAL_JOB_STATUSES:
                async with http.get(f"/v1/jobs/{created['id']}", params={"wait": "30"}) as r:
                    job = await r.json()
        if job["status"] != "succeeded":
            raise RuntimeError(f"the job {job['status']}: {job.get('error_message')}")
    return {
        "upload_s": submitted,
        "job_s": time.perf_counter() - started,
        "api_rss_before_mib": api.before / _MIB,
        "api_rss_peak_mib": api_peak / _MIB,
        "api_growth_mib": (api_peak - api.before) / _MIB,
        "executor_growth_mib": (executor.peak - executor.before) / _MIB,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--blob-backend", choices=["file", "s3"], default="s3")
    parser.add_argument("--mib", type=int, default=1024, help="the input's size in MiB")
    parser.add_argument("--s3-endpoint", help="an S3 endpoint to use instead of a moto server")
    parser.add_argument("--s3-bucket", help="with --s3-endpoint: an existing bucket")
    parser.add_argument("--package", action="store_true", help="upload a package instead")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack_env:
        limit = str((args.mib + 1) * _MIB)
        env = {"CLINAI_MAX_INPUT_BYTES": limit, "CLINAI_MAX_PACKAGE_BYTES": limit}
        if args.blob_backend == "s3":
            env |= stack_env.enter_context(s3_stack_env(args.s3_endpoint, args.s3_bucket))
        up = UpStack("process", env=env)
        try:
            with up as stack:
                run = _run_package if args.package else _run
                result = asyncio.run(run(stack, args.mib))
        finally:
            up.remove()
    what = "package" if args.package else "input"
    print(f"{args.mib} MiB {what} on the {args.blob_backend} backend:")
    for key, value in result.items():
        print(f"  {key:24}{value:>10.1f}")


if __name__ == "__main__":
    main()

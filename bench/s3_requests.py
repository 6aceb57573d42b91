"""The S3 requests a job makes, and what each costs our processes' CPU.

    python -m bench.s3_requests [--jobs 30] [--requests 300] [--rounds 5] [--moto-keep-alive]
                                [--tree OTHER_CHECKOUT]

1. Per job: a `clinai up` stack (process runtime) on a moto server, reached through a
   proxy that counts the requests on the wire (`bench._s3_count`): by the process that
   sent them (api, executor, ...), what they do (`PUT outputs`, `GET inputs`, `COPY`
   for a server-side copy, `?uploads` for a multipart upload, ...) and the connections
   each process opened. A no-op job (no output, no log), the echo model (one output and
   a log), example-model (one output) and a no-op job on a 10 MB input (a multipart
   upload), `--jobs` each after a warm one; printed per job.
2. Per request: `--requests` small PUTs then GETs of 1 KiB through `S3BlobStore` against
   moto, and the same through an aiobotocore client on botocore's default settings, in
   `--rounds` alternating rounds; the CPU this process spends per request (moto's is not
   counted), medians. `--profile` prints where the store's requests spend it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

from bench._delay import delayed
from bench._http import HttpClient
from bench._s3 import s3_stack_env
from bench._s3_count import S3Requests
from bench.jobs import DATA_PARENT, ECHO, EXAMPLE, NOOP, ROOT, Api, UpStack, _png
from services.blobstore import S3BlobStore
from services.packages import zip_folder

_PAYLOAD = os.urandom(1024)


async def _per_job(stack: UpStack, requests: S3Requests, jobs: int) -> None:
    png = _png()
    async with HttpClient(stack.url, headers={"Authorization": f"Bearer {stack.key}"}) as http:
        api = Api(http)
        model = await api.call("POST", "/v1/models", json={"name": f"r-{uuid.uuid4().hex[:8]}"})
        big = os.urandom(10 * 1024 * 1024)
        cases = (
            ("no-op", NOOP, png),
            ("echo", ECHO, png),
            ("example-model", EXAMPLE, png),
            ("no-op on a 10 MB input", NOOP, big),
        )
        for name, folder, given in cases:
            version = await api.wait_built(await api.upload(model["id"], zip_folder(folder)))
            await api.job(version["id"], given)  # a warm worker
            before, conns_before = requests.snapshot()
            for _ in range(jobs):
                await api.job(version["id"], given)
            after, conns_after = requests.snapshot()
            after.subtract(before)
            conns_after.subtract(conns_before)
            total = sum(after.values()) / jobs
            print(f"\n{name}: {total:.2f} S3 requests per job ({jobs} jobs)")
            for (kind, what), count in sorted(after.items()):
                if count:
                    print(f"  {kind:>10}  {what:<28} {count / jobs:6.2f}")
            opened = {kind: n for kind, n in conns_after.items() if n}
            print(f"  connections opened during the jobs: {opened or 'none'}")


async def _timed(
    rounds: int, sides: dict[str, Callable[[], Awaitable[tuple[float, float]]]]
) -> dict[str, list[tuple[float, float]]]:
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for round_no in range(rounds):
        order = list(sides) if round_no % 2 == 0 else list(reversed(sides))
        for name in order:
            runs[name].append(await sides[name]())
    return runs


async def _per_request(endpoint: str, bucket: str, count: int, rounds: int, profile: bool) -> None:
    session = get_session()
    session.set_credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as spool:
        # Its own session, as a service makes it (credentials from the environment).
        store = S3BlobStore(bucket=bucket, spool=Path(spool), endpoint_url=endpoint)
        async with session.create_client(
            "s3", region_name="us-east-1", endpoint_url=endpoint
        ) as raw:

            async def ours() -> tuple[float, float]:
                keys = [f"bench/{uuid.uuid4().hex}" for _ in range(count)]
                put = await _cpu(
                    lambda: _each(
                        keys, lambda k: store.put_bytes(k, _PAYLOAD, "application/octet-stream")
                    )
                )
                get = await _cpu(lambda: _each(keys, store.get_bytes))
                return put / count, get / count

            async def defaults() -> tuple[float, float]:
                keys = [f"bench/{uuid.uuid4().hex}" for _ in range(count)]

                async def put(key: str) -> None:
                    await raw.put_object(Bucket=bucket, Key=key, Body=_PAYLOAD)

                async def get(key: str) -> None:
                    got = await raw.get_object(Bucket=bucket, Key=key)
                    async with got["Body"] as body:
                        await body.read()

                put_s = await _cpu(lambda: _each(keys, put))
                get_s = await _cpu(lambda: _each(keys, get))
                return put_s / count, get_s / count

            await ours()
            await defaults()  # the clients made, the connections open
            runs = await _timed(rounds, {"S3BlobStore": ours, "botocore defaults": defaults})
            print(
                f"\nCPU of this process per request (1 KiB, medians of {rounds} rounds of {count}):"
            )
            for name, pairs in runs.items():
                put_ms = statistics.median(p for p, _ in pairs) * 1000
                get_ms = statistics.median(g for _, g in pairs) * 1000
                print(f"  {name:>18}: PUT {put_ms:5.2f} ms, GET {get_ms:5.2f} ms")
            if profile:
                profiler = cProfile.Profile(time.process_time)
                profiler.enable()
                await ours()
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumtime").print_stats(70)
        await store.close()


async def _each(keys: list[str], call: Callable[[str], Awaitable[Any]]) -> None:
    for key in keys:
        await call(key)


async def _cpu(run: Callable[[], Awaitable[None]]) -> float:
    started = time.process_time()
    await run()
    return time.process_time() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=30, help="jobs per model (0: none)")
    parser.add_argument("--requests", type=int, default=300, help="PUTs and GETs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="profile the store's requests")
    parser.add_argument(
        "--tree",
        type=Path,
        default=ROOT,
        help="count the jobs of a stack from this checkout (with its own .venv)",
    )
    parser.add_argument(
        "--moto-keep-alive",
        action="store_true",
        help="moto served by uvicorn, which keeps connections open (bench._moto_app)",
    )
    args = parser.parse_args(argv)
    with s3_stack_env(None, None, keep_alive=args.moto_keep_alive) as env:
        endpoint, bucket = env["CLINAI_S3_ENDPOINT_URL"], env["CLINAI_S3_BUCKET"]
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        if args.requests:
            asyncio.run(_per_request(endpoint, bucket, args.requests, args.rounds, args.profile))
        if args.jobs:
            requests = S3Requests()
            with delayed(endpoint, 0.0, requests.watch) as proxy:
                stack = UpStack(
                    "process",
                    DATA_PARENT,
                    env={**env, "CLINAI_S3_ENDPOINT_URL": proxy},
                    tree=args.tree.resolve(),
                )
                try:
                    with stack:
                        requests.root = stack.pid
                        asyncio.run(_per_job(stack, requests, args.jobs))
                finally:
                    stack.remove()


if __name__ == "__main__":
    main()

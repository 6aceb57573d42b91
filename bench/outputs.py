"""How long the executor takes to store a job's outputs, on each blob backend.

    python -m bench.outputs [--outputs 300] [--bytes 1024] [--rounds 7] [--at-once N ...]
                            [--s3-latency-ms MS] [--s3-endpoint URL [--s3-bucket NAME]]

Times `upload_outputs` (what the executor runs once a job has succeeded) on files
already in the store's spool folder, as the runtime leaves a job's output copies: a job
with `--outputs` small files, then a job with one output and one with none (the path
every no-op or single-output job takes, which must stay as cheap as it was). The `file`
backend on a temporary folder on this disk (the same file system as the spool, so
every output is renamed in and made durable), the `s3` backend on a moto server started
for the run unless `--s3-endpoint` names one (with the caller's AWS credentials).
`--at-once` measures the many-outputs job with other bounds on uploads in flight (the
default is the executor's own). `--s3-latency-ms` measures `s3` once more through a
proxy that holds each of its answers that long (`bench._delay`), as a round trip to a
store off this host would: moto answers from loopback at once, but runs every request
in one Python process, so on moto alone the uploads wait for its CPU, not the network.
First, the executor's own cost for one or no output: through a store that stores
nothing, microseconds per call. Prints medians over the rounds; this machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiobotocore.session import get_session

from bench._delay import delayed
from bench._s3 import s3_stack_env
from services.blobstore import BlobStore, FileBlobStore, S3BlobStore
from services.executor._files import upload_outputs
from services.runtimes.base import OutputCopy

_SINGLE_ROUNDS = 200  # one or no output: fast, so many more rounds
_OWN_CALLS = 5000  # calls per round through the store that stores nothing


class _Nothing:
    """Stores nothing: what remains of a call is upload_outputs' own work."""

    async def move_in(self, key: str, path: Path, content_type: str) -> None:
        return None


async def _own_cost(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-outputs-") as folder:
        path = Path(folder) / "out"
        path.write_bytes(b"x")
        for count in (1, 0):
            copies = [OutputCopy(name="out.png", path=path)] * count
            runs = []
            for _ in range(args.rounds):
                began = time.perf_counter()
                for _ in range(_OWN_CALLS):
                    await upload_outputs(_Nothing(), "job_x", copies)  # type: ignore[arg-type]
                runs.append((time.perf_counter() - began) / _OWN_CALLS)
            print(
                f"  {'own cost':>10}: {count} output{'s' if count != 1 else ''}: "
                f"median {statistics.median(runs) * 1e6:8.2f} µs, "
                f"min {min(runs) * 1e6:.2f} µs ({args.rounds} rounds of {_OWN_CALLS} calls)",
                flush=True,
            )


async def _one_job(blobs: BlobStore, outputs: int, size: int, at_once: int | None) -> float:
    """Seconds to store one job's `outputs` files of `size` bytes."""
    spool = await blobs.spool_dir()
    job = f"job_{uuid.uuid4().hex}"
    payload = os.urandom(size)
    copies = []
    for number in range(outputs):
        path = spool / f"{job}-{number}"
        path.write_bytes(payload)
        copies.append(OutputCopy(name=f"out-{number:04d}.bin", path=path))
    options = {} if at_once is None else {"at_once": at_once}
    began = time.perf_counter()
    stored = await upload_outputs(blobs, job, copies, **options)  # type: ignore[arg-type]
    took = time.perf_counter() - began
    if len(stored) != outputs:
        raise RuntimeError(f"{len(stored)} of {outputs} outputs listed")
    return took


async def _measure(
    label: str, blobs: BlobStore, args: argparse.Namespace, bounds: Sequence[int | None]
) -> None:
    await _one_job(blobs, 1, args.bytes, None)  # clients, folders: made once, not timed
    for at_once in bounds:
        runs = [
            await _one_job(blobs, args.outputs, args.bytes, at_once) for _ in range(args.rounds)
        ]
        bound = "default bound" if at_once is None else f"at most {at_once} at once"
        print(
            f"  {label:>10}: {args.outputs} outputs of {args.bytes} B ({bound}): "
            f"median {statistics.median(runs) * 1000:8.1f} ms "
            f"(min {min(runs) * 1000:.1f}, max {max(runs) * 1000:.1f}; {args.rounds} rounds)",
            flush=True,
        )
    for count in (1, 0):
        runs = [await _one_job(blobs, count, args.bytes, None) for _ in range(_SINGLE_ROUNDS)]
        print(
            f"  {label:>10}: {count} output{'s' if count != 1 else ''}: "
            f"median {statistics.median(runs) * 1e6:8.1f} µs ({_SINGLE_ROUNDS} rounds)",
            flush=True,
        )


async def _file(args: argparse.Namespace, bounds: Sequence[int | None]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-outputs-", dir=args.dir) as root:
        blobs = FileBlobStore(Path(root), "http://127.0.0.1:1", b"b" * 32)
        await _measure("file", blobs, args, bounds)


async def _s3(
    label: str,
    endpoint: str,
    env: dict[str, str],
    args: argparse.Namespace,
    bounds: Sequence[int | None],
) -> None:
    session = get_session()
    if "AWS_ACCESS_KEY_ID" in env:  # moto's; else the caller's own, the usual AWS way
        session.set_credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    with tempfile.TemporaryDirectory(prefix="bench-outputs-spool-", dir=args.dir) as spool:
        blobs = S3BlobStore(
            bucket=env["CLINAI_S3_BUCKET"],
            spool=Path(spool),
            endpoint_url=endpoint,
            session=session,
        )
        try:
            await _measure(label, blobs, args, bounds)
        finally:
            await blobs.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outputs", description=__doc__)
    parser.add_argument("--outputs", type=int, default=300)
    parser.add_argument("--bytes", type=int, default=1024, help="each output's size")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--at-once", type=int, nargs="*", default=[], metavar="N")
    parser.add_argument("--dir", default=None, help="where the file backend keeps its blobs")
    parser.add_argument("--s3-latency-ms", type=float, default=0.0)
    parser.add_argument("--s3-endpoint", default=None)
    parser.add_argument("--s3-bucket", default=None)
    args = parser.parse_args(argv)
    bounds: list[int | None] = [None, *args.at_once]
    if args.at_once and "at_once" not in inspect.signature(upload_outputs).parameters:
        parser.error("this checkout's upload_outputs takes no bound (--at-once)")
    asyncio.run(_own_cost(args))
    asyncio.run(_file(args, bounds))
    with s3_stack_env(args.s3_endpoint, args.s3_bucket) as env:
        endpoint = env["CLINAI_S3_ENDPOINT_URL"]
        asyncio.run(_s3("s3", endpoint, env, args, bounds))
        if args.s3_latency_ms > 0:
            with delayed(endpoint, args.s3_latency_ms / 1000) as far:
                label = f"s3+{args.s3_latency_ms:g}ms"
                asyncio.run(_s3(label, far, env, args, bounds))


if __name__ == "__main__":
    main()

"""Pipeline benchmark: append throughput, projection replay rate and publish->visible lag.

    python -m bench.pipeline [--events 50000] [--lag-seconds 10] [--rebuilds 1] [--durable]

Starts its own nats-server and Postgres (fast mode unless --durable) in a temp dir.
Not a test: it prints figures (and one JSON line) for the team to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/pipeline.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats

from events import EventStore, JobStarted, new_event_id, new_id
from projections import Projector
from projections.rebuild import rebuild
from projections.watermark import ProjectionWatermark
from services.embedded import EmbeddedNats, EmbeddedPostgres
from tests.projections._workload import append_chains, make_workload

__all__ = ["main", "run"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _sequential_appends(store: EventStore, n: int) -> float:
    job = new_id("job")
    started = time.perf_counter()
    for _ in range(n):
        await store.append(_job_event(job), expected=None)
    return n / (time.perf_counter() - started)


def _job_event(job: str) -> JobStarted:
    return JobStarted(
        id=new_event_id(),
        aggregate_id=job,
        occurred_at=datetime.now(UTC),
        actor="bench",
        correlation_id="bench",
        worker="w",
    )


async def _lag(
    store: EventStore, mark: ProjectionWatermark, rate: int, seconds: float
) -> list[float]:
    lags: list[float] = []
    job = new_id("job")

    async def one() -> None:
        started = time.perf_counter()
        seq = await store.append(_job_event(job), expected=None)
        if await mark.wait_for(seq, 10.0):
            lags.append(time.perf_counter() - started)

    tasks: list[asyncio.Task[None]] = []
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return lags


async def run(events: int, lag_seconds: float, durable: bool, rebuilds: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clinai-bench-") as tmp:
        data = Path(tmp)
        os.chmod(data, 0o755)  # Postgres may run as another user (when we are root)
        nats_server = EmbeddedNats(data / "nats")
        postgres = EmbeddedPostgres(data / "pg", fast=not durable)
        url = await nats_server.start()
        dsn = await postgres.start()
        nc = await nats.connect(url)
        try:
            store = await EventStore.open(nc)
            out: dict[str, Any] = {"events": events, "durable_postgres": durable}
            out["append_sequential_per_s"] = await _sequential_appends(store, 3_000)
            work = make_workload(events)
            started = time.perf_counter()
            for wave in work.waves:
                await append_chains(store, wave, concurrency=128)
            out["append_concurrent_per_s"] = work.count / (time.perf_counter() - started)
            total = await store.stream_last_seq()
            out["stream_events"] = total

            rates = [(await rebuild(dsn, store)).events_per_s for _ in range(rebuilds)]
            out["replay_rebuild_per_s"] = statistics.median(rates)
            if rebuilds > 1:
                out["replay_rebuild_runs"] = [round(rate) for rate in rates]

            # The live projector catching up from an empty schema of its own.
            stop = asyncio.Event()
            projector = Projector(dsn, store, schema="bench_live")
            async with await ProjectionWatermark.open(dsn, "bench_live") as live_mark:
                started = time.perf_counter()
                task = asyncio.create_task(projector.run(stop))
                if not await live_mark.wait_for(total, 300):
                    raise RuntimeError("the projector did not catch up")
                out["replay_projector_per_s"] = total / (time.perf_counter() - started)
                lags = await _lag(store, live_mark, 1_000, lag_seconds)
                stop.set()
                await task
            out["lag_samples"] = len(lags)
            out["lag_p50_ms"] = statistics.median(lags) * 1000
            out["lag_p99_ms"] = _percentile(lags, 0.99) * 1000
            return out
        finally:
            await nc.close()
            await postgres.stop()
            await nats_server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument(
        "--rebuilds", type=int, default=1, help="rebuild this many times, report the median"
    )
    parser.add_argument("--durable", action="store_true", help="Postgres with fsync on")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args(argv)
    if args.rebuilds < 1:
        parser.error("--rebuilds must be at least 1")
    coro = run(args.events, args.lag_seconds, args.durable, args.rebuilds)
    if args.uvloop:
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    for key, value in result.items():
        print(f"{key:>28}: {value:,.1f}" if isinstance(value, float) else f"{key:>28}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

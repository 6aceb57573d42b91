"""Webhooks and tail benchmark: append -> webhook received latency, deliveries/s, and
how fast `clinai tail --from-seq` prints its first line on a big stream.

    python -m bench.webhooks [--rate 200] [--seconds 10] [--burst 5000] [--tail-events 1000000]

Starts its own nats-server and Postgres (fast mode) in a temp dir, runs the projector
and the notifier as processes (`clinai serve ...`, as in production) and a webhook
receiver (aiohttp, loopback, allowlisted) in this process. The tail part uses a second
nats-server filled with --tail-events events and runs `clinai tail` as a subprocess.
Not a test: it prints figures (and one JSON line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/webhooks.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats
import orjson
from aiohttp import web

from events import EventStore, JobRequested, JobStarted, encode_event, new_event_id, new_id
from projections import LIVE_SCHEMA, apply_migrations
from projections.db import connect
from services.domain import CommandContext
from services.domain.destinations import DestinationPolicy
from services.domain.webhooks import WebhookCommands
from services.embedded import EmbeddedNats, EmbeddedPostgres

__all__ = ["main"]

OWNER = "usr_bench"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class _Receiver:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}  # job id -> perf_counter at arrival
        self.count = 0
        self.changed = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.arrived.setdefault(body["data"]["id"], time.perf_counter())
        self.count += 1
        self.changed.set()
        return web.Response(status=204)

    async def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return False
        return True


def _job(job_id: str) -> JobRequested:
    return JobRequested(
        id=new_event_id(),
        aggregate_id=job_id,
        occurred_at=datetime.now(UTC),
        actor=OWNER,
        correlation_id="bench",
        owner=OWNER,
        model_id="mdl_bench",
        version_id="ver_bench",
        input_key="k",
        input_filename="in.png",
    )


async def _latency(store: EventStore, rx: _Receiver, rate: int, seconds: float) -> dict[str, float]:
    sent: dict[str, float] = {}
    base = rx.count
    n = int(rate * seconds)
    begin = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load, not synchronisation
        job_id = new_id("job")
        sent[job_id] = time.perf_counter()
        tasks.append(asyncio.create_task(store.append(_job(job_id), expected=0)))
    await asyncio.gather(*tasks)
    await rx.wait_count(base + n, 60)
    lat = [(rx.arrived[j] - t) * 1000 for j, t in sent.items() if j in rx.arrived]
    return {
        "events": n,
        "received": len(lat),
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
        "max_ms": max(lat) if lat else float("nan"),
    }


async def _throughput(store: EventStore, rx: _Receiver, burst: int) -> dict[str, float]:
    base = rx.count
    started = time.perf_counter()
    for chunk in range(0, burst, 500):
        await asyncio.gather(
            *(store.append(_job(new_id("job")), expected=0) for _ in range(min(500, burst - chunk)))
        )
    appended = time.perf_counter() - started
    ok = await rx.wait_count(base + burst, 300)
    took = time.perf_counter() - started
    return {
        "deliveries": rx.count - base,
        "complete": float(ok),
        "append_s": appended,
        "seconds": took,
        "deliveries_per_s": (rx.count - base) / took,
    }


async def _fill(url: str, n: int) -> float:
    """n events into a fresh stream, by concurrent core publishes on stream subjects
    (JetStream stores them; no per-message ack round trip), then wait for the count."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    try:
        await EventStore.open(nc)  # creates the stream
        jobs = [new_id("job") for _ in range(1000)]
        started = time.perf_counter()
        js = nc.jetstream()
        for i in range(n):
            job = jobs[i % len(jobs)]
            event = JobStarted(
                id=new_event_id(),
                aggregate_id=job,
                occurred_at=datetime.now(UTC),
                actor="bench",
                correlation_id="bench",
                attempt=i,
            )
            subject, payload = f"clinai.job.{job}.JobStarted", encode_event(event)
            if i == n - 1:
                # Acked, and the server stores one connection's messages in order: when
                # this one is stored, so is every one before it.
                ack = await js.publish(subject, payload)
                if ack.seq != n:
                    raise RuntimeError(f"expected {n} events in the stream, got {ack.seq}")
            else:
                await nc.publish(subject, payload)
            if i % 20_000 == 0:
                await nc.flush()
        return time.perf_counter() - started
    finally:
        await nc.drain()


def _first_line_s(env: dict[str, str], args: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "tail", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    took = time.perf_counter() - started
    proc.kill()
    proc.wait()
    return took


def _import_s() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import services.cli, services.cli.tail"], check=True)
    return time.perf_counter() - started


async def _tail_bench(data: Path, n: int) -> dict[str, float]:
    server = EmbeddedNats(data / "nats-tail")
    url = await server.start()
    try:
        fill_s = await _fill(url, n)
        env = {**os.environ, "CLINAI_NATS_URL": url}
        runs = {
            "from_seq_end": ["--from-seq", str(n - 10)],
            "from_seq_middle": ["--from-seq", str(n // 2)],
            "since_1h_json": ["--since", "1h", "--json"],
        }
        out: dict[str, float] = {"events": n, "fill_s": fill_s, "python_import_s": _import_s()}
        for name, args in runs.items():
            out[f"first_line_{name}_s"] = min(_first_line_s(env, args) for _ in range(3))
        return out
    finally:
        await server.stop()


async def run(rate: int, seconds: float, burst: int, tail_events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clinai-bench-") as tmp:
        data = Path(tmp)
        nats_server = EmbeddedNats(data / "nats")
        postgres = EmbeddedPostgres(data / "pg", fast=True)
        url = await nats_server.start()
        dsn = await postgres.start()
        procs: list[asyncio.subprocess.Process] = []
        rx = _Receiver()
        try:
            conn = await connect(dsn)
            await apply_migrations(conn, LIVE_SCHEMA)
            await conn.close()
            env = {
                **os.environ,
                "CLINAI_DATA_DIR": str(data),
                "CLINAI_NATS_URL": url,
                "CLINAI_DATABASE_URL": dsn,
                "CLINAI_WEBHOOK_KEY": "b" * 40,
                "CLINAI_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
                "CLINAI_WEBHOOK_ENDPOINT_CONCURRENCY": "32",
            }
            nc = await nats.connect(url)
            store = await EventStore.open(nc)
            await rx.start()
            commands = WebhookCommands(
                store,
                b"b" * 40,
                policy=DestinationPolicy.from_setting("127.0.0.0/8"),
                rotation_grace_s=60,
            )
            ctx = CommandContext(actor=OWNER, correlation_id="bench")
            await commands.create(
                ctx, url=f"http://127.0.0.1:{rx.port}/hook", events=["job.created"], description=""
            )
            for name in ("projector", "notifier"):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "services.cli", "serve", name, env=env
                    )
                )
            # Warm up: the first delivery proves the pipeline is running.
            await store.append(_job(new_id("job")), expected=0)
            if not await rx.wait_count(1, 60):
                raise RuntimeError("the notifier never delivered the warm-up event")
            latency = await _latency(store, rx, rate, seconds)
            throughput = await _throughput(store, rx, burst)
            await nc.drain()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await asyncio.wait_for(proc.wait(), 15)
            await rx.stop()
            await postgres.stop()
            await nats_server.stop()
        tail = await _tail_bench(data, tail_events)
    return {"latency": latency, "throughput": throughput, "tail": tail}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=200, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=5000, help="events for deliveries/s")
    parser.add_argument("--tail-events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.rate, args.seconds, args.burst, args.tail_events))
    lat, thr, tail = result["latency"], result["throughput"], result["tail"]
    print(
        f"append -> webhook received at {args.rate}/s: p50 {lat['p50_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms "
        f"({lat['received']}/{lat['events']} received)"
    )
    print(
        f"deliveries to a fast local receiver: {thr['deliveries_per_s']:.0f}/s "
        f"({thr['deliveries']:.0f} in {thr['seconds']:.2f} s; appends took {thr['append_s']:.2f} s)"
    )
    print(
        f"clinai tail on {tail['events']:,} events (filled in {tail['fill_s']:.1f} s): first line "
        f"--from-seq near end {tail['first_line_from_seq_end_s']:.3f} s, middle "
        f"{tail['first_line_from_seq_middle_s']:.3f} s, --since 1h --json "
        f"{tail['first_line_since_1h_json_s']:.3f} s "
        f"(python start + imports alone {tail['python_import_s']:.3f} s)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

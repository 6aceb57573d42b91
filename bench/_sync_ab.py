"""`python -m bench.jobs --nats-sync-ab always,2m`: what JetStream's sync_interval costs
on the job path. One `clinai up` per setting, side by side, each with the no-op model
built and its workers warm; then bursts alternate between them (A, B, A, B, …), each a
series of warm no-op jobs one after another (p50) and a jobs/s run with concurrent
clients. Medians over the bursts, and B's ratio to A: interleaving spreads the shared
machine's noise over both settings instead of charging it to one."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench._http import HttpClient
from bench.jobs import NOOP, Api, UpStack, _flush_disk, _png, _throughput
from services.packages import zip_folder

__all__ = ["run_ab"]


async def _prepare(stack: UpStack, clients: int) -> tuple[HttpClient, Api, str]:
    http = HttpClient(stack.url, headers={"Authorization": f"Bearer {stack.key}"})
    api = Api(http)
    model = await api.call("POST", "/v1/models", json={"name": "sync-ab"})
    noop = await api.wait_built(await api.upload(model["id"], zip_folder(NOOP)))
    await asyncio.gather(*(api.job(noop["id"], _png()) for _ in range(clients)))  # warm
    return http, api, noop["id"]


async def _burst(
    api: Api, version: str, stack: UpStack, jobs: int, clients: int, seconds: float
) -> tuple[float, float]:
    png = _png()
    latencies = [await api.job(version, png) for _ in range(jobs)]
    rate, _ = await _throughput(api, version, png, clients, seconds, stack.pid, False)
    return statistics.median(latencies) * 1000, rate


async def _run(stacks: dict[str, UpStack], args: argparse.Namespace) -> dict[str, Any]:
    prepared = {name: await _prepare(stack, args.clients) for name, stack in stacks.items()}
    _flush_disk()
    p50s: dict[str, list[float]] = {name: [] for name in stacks}
    rates: dict[str, list[float]] = {name: [] for name in stacks}
    try:
        for round_no in range(args.rounds):
            order = list(stacks) if round_no % 2 == 0 else list(reversed(stacks))
            for name in order:
                _, api, version = prepared[name]
                p50, rate = await _burst(
                    api, version, stacks[name], args.jobs, args.clients, args.seconds
                )
                p50s[name].append(p50)
                rates[name].append(rate)
                print(
                    f"  round {round_no + 1} sync={name:>8}: p50 {p50:6.2f} ms, {rate:6.1f} jobs/s",
                    flush=True,
                )
    finally:
        for http, _, _ in prepared.values():
            await http.close()
    return {"p50": p50s, "rate": rates}


def run_ab(settings: list[str], args: argparse.Namespace) -> None:
    if len(settings) != 2:
        raise SystemExit("--nats-sync-ab takes two values, e.g. always,2m")
    stacks = {
        sync: UpStack(args.runtime, args.data_parent, {"CLINAI_NATS_SYNC": sync})
        for sync in settings
    }
    started = time.perf_counter()
    try:
        for stack in stacks.values():
            stack.__enter__()
        result = asyncio.run(_run(stacks, args))
    finally:
        for stack in stacks.values():
            stack.__exit__()
            stack.remove()
    a, b = settings
    print(f"\nmedians over {args.rounds} bursts each ({time.perf_counter() - started:.0f} s):")
    for name in settings:
        print(
            f"  sync={name:>8}: no-op job p50 {statistics.median(result['p50'][name]):.2f} ms, "
            f"{statistics.median(result['rate'][name]):.1f} jobs/s ({args.clients} clients)"
        )
    p50_ratio = statistics.median(result["p50"][a]) / statistics.median(result["p50"][b])
    rate_ratio = statistics.median(result["rate"][a]) / statistics.median(result["rate"][b])
    print(f"  {a} / {b}: p50 x{p50_ratio:.2f}, jobs/s x{rate_ratio:.2f}")

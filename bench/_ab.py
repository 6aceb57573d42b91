"""Interleaved A/B of the no-op job path between two stacks:

    python -m bench.jobs --ab-tree ../other-checkout   # this code against another tree's
    python -m bench.jobs --nats-sync-ab always,2m      # two CLINAI_NATS_SYNC values
    python -m bench.jobs --blob-ab --ab-model example  # the s3 backend against file

One `clinai up` per side, running side by side, each with the no-op model (or, with
`--ab-model example`, example-model) built and its workers warm; then bursts alternate
between them (A, B, B, A, …), each a series of warm jobs one after another (p50) and a
jobs/s run with concurrent clients. Medians over the bursts, and the ratios of the first
side to the second: interleaving spreads the shared machine's noise over both sides
instead of charging it to one. The other tree needs its own `.venv`
(`make .venv/.installed` there)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench._http import HttpClient
from bench.jobs import EXAMPLE, NOOP, Api, UpStack, _flush_disk, _png, _throughput
from services.packages import zip_folder

__all__ = ["blob_stacks", "run_ab", "sync_stacks", "tree_stacks"]


async def _prepare(stack: UpStack, clients: int, which: str) -> tuple[HttpClient, Api, str]:
    http = HttpClient(stack.url, headers={"Authorization": f"Bearer {stack.key}"})
    api = Api(http)
    model = await api.call("POST", "/v1/models", json={"name": "ab"})
    package = zip_folder(EXAMPLE if which == "example" else NOOP)
    version = await api.wait_built(await api.upload(model["id"], package))
    await asyncio.gather(*(api.job(version["id"], _png()) for _ in range(clients)))  # warm
    return http, api, version["id"]


async def _burst(
    api: Api, version: str, stack: UpStack, jobs: int, clients: int, seconds: float
) -> tuple[float, float, dict[str, float]]:
    png = _png()
    latencies = [await api.job(version, png) for _ in range(jobs)]
    rate, cpu = await _throughput(api, version, png, clients, seconds, stack.pid, False)
    return statistics.median(latencies) * 1000, rate, cpu


async def _run(stacks: dict[str, UpStack], args: argparse.Namespace) -> dict[str, Any]:
    prepared = {
        name: await _prepare(stack, args.clients, args.ab_model) for name, stack in stacks.items()
    }
    _flush_disk()
    p50s: dict[str, list[float]] = {name: [] for name in stacks}
    rates: dict[str, list[float]] = {name: [] for name in stacks}
    cpus: dict[str, list[dict[str, float]]] = {name: [] for name in stacks}
    try:
        for round_no in range(args.rounds):
            order = list(stacks) if round_no % 2 == 0 else list(reversed(stacks))
            for name in order:
                _, api, version = prepared[name]
                p50, rate, cpu = await _burst(
                    api, version, stacks[name], args.jobs, args.clients, args.seconds
                )
                p50s[name].append(p50)
                rates[name].append(rate)
                cpus[name].append(cpu)
                print(
                    f"  round {round_no + 1} {name:>10}: p50 {p50:6.2f} ms, {rate:6.1f} jobs/s",
                    flush=True,
                )
    finally:
        for http, _, _ in prepared.values():
            await http.close()
    return {"p50": p50s, "rate": rates, "cpu": cpus}


def _cpu_medians(bursts: list[dict[str, float]]) -> dict[str, float]:
    kinds = sorted({kind for burst in bursts for kind in burst})
    return {kind: statistics.median(burst.get(kind, 0.0) for burst in bursts) for kind in kinds}


def run_ab(stacks: dict[str, UpStack], args: argparse.Namespace) -> None:
    """Runs the bursts over two stacks (first / second is the ratio printed) and prints
    the medians; stops and removes the stacks."""
    started = time.perf_counter()
    try:
        for stack in stacks.values():
            stack.__enter__()
        result = asyncio.run(_run(stacks, args))
    finally:
        for stack in stacks.values():
            stack.__exit__()
            stack.remove()
    a, b = stacks
    print(f"\nmedians over {args.rounds} bursts each ({time.perf_counter() - started:.0f} s):")
    for name in stacks:
        print(
            f"  {name:>10}: {args.ab_model} job p50 "
            f"{statistics.median(result['p50'][name]):.2f} ms, "
            f"{statistics.median(result['rate'][name]):.1f} jobs/s ({args.clients} clients)"
        )
    p50_ratio = statistics.median(result["p50"][a]) / statistics.median(result["p50"][b])
    rate_ratio = statistics.median(result["rate"][a]) / statistics.median(result["rate"][b])
    print(f"  {a} / {b}: p50 x{p50_ratio:.3f}, jobs/s x{rate_ratio:.3f}")
    cpu = {name: _cpu_medians(result["cpu"][name]) for name in stacks}
    print(f"CPU ms per job in the jobs/s runs (medians), {a} / {b}:")
    for kind in sorted(set(cpu[a]) | set(cpu[b])):
        mine, theirs = cpu[a].get(kind, 0.0), cpu[b].get(kind, 0.0)
        ratio = f"x{mine / theirs:.2f}" if theirs else "-"
        print(f"  {kind:>16}: {mine:6.3f} / {theirs:6.3f}  {ratio}")


def sync_stacks(settings: list[str], args: argparse.Namespace) -> dict[str, UpStack]:
    if len(settings) != 2:
        raise SystemExit("--nats-sync-ab takes two values, e.g. always,2m")
    return {
        f"sync={sync}": UpStack(args.runtime, args.data_parent, {"CLINAI_NATS_SYNC": sync})
        for sync in settings
    }


def tree_stacks(
    other: Path, args: argparse.Namespace, store: dict[str, str] | None = None
) -> dict[str, UpStack]:
    """`store`: the blob store's settings for both sides (bench._s3)."""
    if not (other / ".venv" / "bin" / "clinai").exists():
        raise SystemExit(f"{other}/.venv/bin/clinai is missing: run `make .venv/.installed` there")
    env = {**(store or {}), **dict(setting.split("=", 1) for setting in args.set)}
    return {
        "this": UpStack(args.runtime, args.data_parent, env),
        "other": UpStack(args.runtime, args.data_parent, env, tree=other.resolve()),
    }


def blob_stacks(tree: Path, args: argparse.Namespace, store: dict[str, str]) -> dict[str, UpStack]:
    """The checkout `tree`'s stack on the s3 backend (`store`, bench._s3) and on file."""
    env = dict(setting.split("=", 1) for setting in args.set)
    return {
        "s3": UpStack(args.runtime, args.data_parent, {**env, **store}, tree=tree.resolve()),
        "file": UpStack(args.runtime, args.data_parent, env, tree=tree.resolve()),
    }

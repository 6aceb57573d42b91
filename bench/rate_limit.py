"""The per-key rate limiter alone, this tree's against another checkout's, on one real
Postgres (embedded, fast mode):

    python -m bench.rate_limit [--other ../main] [--rounds 6] [--seconds 3]
                               [--clients 32] [--pace-ms 64]

`--clients` commands of one key in flight, each client sending its next one `--pace-ms`
after the last (32 clients at 64 ms: about 500 commands a second, a busy API process),
with `bench.jobs`'s limits (rate and burst 1,000,000: every command admitted, the
limiter still on the path). Bursts alternate between the two limiters (A, B, B, A, ...)
on one pool; per command: the statements Postgres received (asyncpg's query logger),
this process's CPU (the limiter's side, in an API process) and Postgres's CPU. Medians
over the bursts, and this / other.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg

from bench._proc import cpu_seconds, descendants
from services.api import _rate_limit
from services.embedded import EmbeddedPostgres

__all__ = ["main"]

_LIMIT = 1_000_000.0


def _other_module(tree: Path) -> ModuleType:
    """The other checkout's `services/api/_rate_limit.py`, imported under its own name
    (it imports this tree's `services.api.problems`, which it only uses to refuse)."""
    path = tree / "services" / "api" / "_rate_limit.py"
    spec = importlib.util.spec_from_file_location("other_rate_limit", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def _burst(
    limiter: Any, key: str, clients: int, pace_s: float, seconds: float, postgres_pid: int
) -> tuple[int, float, float]:
    """Commands sent, and the CPU seconds of this process and of Postgres meanwhile."""
    sent = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            decision = await limiter.hit(key)
            if not decision.allowed:
                raise SystemExit("a command was refused: the limits are meant to admit all")
            sent += 1
            await asyncio.sleep(pace_s)  # the pace of a client, not a synchronisation

    pg_before = sum(cpu_seconds(pid) for pid in descendants(postgres_pid))
    mine_before = time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    mine = time.process_time() - mine_before
    pg = sum(cpu_seconds(pid) for pid in descendants(postgres_pid)) - pg_before
    return sent, mine, pg


async def _run(dsn: str, postgres_pid: int, args: argparse.Namespace) -> None:
    statements = 0

    def count(query: asyncpg.connection.LoggedQuery) -> None:
        nonlocal statements
        statements += "rate_buckets" in query.query

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(count)

    pool = await asyncpg.create_pool(dsn, init=init)
    other = _other_module(args.other)
    limiters = {
        "this": _rate_limit.RateLimiter(pool, rate_per_s=_LIMIT, burst=int(_LIMIT)),
        "other": other.RateLimiter(pool, rate_per_s=_LIMIT, burst=int(_LIMIT)),
    }
    await limiters["this"].open()
    giving_back = asyncio.create_task(limiters["this"].run())
    per: dict[str, dict[str, list[float]]] = {
        name: {"statements": [], "cpu_us": [], "pg_us": [], "per_s": []} for name in limiters
    }
    try:
        for round_no in range(args.rounds):
            order = list(limiters) if round_no % 2 == 0 else list(reversed(limiters))
            for name in order:
                statements = 0
                started = time.perf_counter()
                sent, mine, pg = await _burst(
                    limiters[name],
                    f"key_{name}_{round_no}",
                    args.clients,
                    args.pace_ms / 1000,
                    args.seconds,
                    postgres_pid,
                )
                row = per[name]
                row["statements"].append(statements / sent)
                row["cpu_us"].append(mine / sent * 1e6)
                row["pg_us"].append(pg / sent * 1e6)
                row["per_s"].append(sent / (time.perf_counter() - started))
                print(
                    f"  round {round_no + 1} {name:>5}: {sent / args.seconds:6.0f} commands/s, "
                    f"{statements / sent:.4f} statements, {mine / sent * 1e6:5.1f} us here, "
                    f"{pg / sent * 1e6:5.1f} us Postgres a command",
                    flush=True,
                )
    finally:
        giving_back.cancel()
        await pool.close()
    print(f"\nmedians over {args.rounds} bursts each, per command:")
    for what in ("statements", "cpu_us", "pg_us", "per_s"):
        mine, theirs = (statistics.median(per[name][what]) for name in ("this", "other"))
        ratio = f"x{mine / theirs:.3f}" if theirs else "-"
        print(f"  {what:>10}: this {mine:9.4f}, other {theirs:9.4f}  {ratio}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--other", type=Path, default=Path("/work/main"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--pace-ms", type=float, default=64.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clinai-rl-bench-", dir="/tmp") as folder:
        postgres = EmbeddedPostgres(Path(folder), fast=True)
        dsn = postgres.start_blocking()
        try:
            if postgres.pid is None:
                raise SystemExit("postgres did not start")
            asyncio.run(_run(dsn, postgres.pid, args))
        finally:
            postgres.stop_blocking()


if __name__ == "__main__":
    main()

"""Postgres statements per warm no-op job, by what they touch, on a real `clinai up`:

    python -m bench.pg_statements [--tree OTHER_CHECKOUT] [--clients 32] [--seconds 4]
                                  [--set CLINAI_NAME=VALUE ...]

Starts one stack (this tree's, or another checkout's with its own `.venv`), builds the
no-op model and warms its workers, then turns on Postgres's `log_statement = 'all'` (a
reload, no restart) for a jobs/s run of `--clients` concurrent clients and counts the
statements the run logged, per job: all of them, and those of each kind (the rate
limiter's buckets, the projector's writes, ...). The logging itself costs Postgres CPU,
so this counts; `bench.jobs --ab-tree` times.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import Counter
from pathlib import Path

import asyncpg

from bench._ab import _prepare
from bench.jobs import DATA_PARENT, ROOT, UpStack, _png, _throughput
from services.embedded.credentials import POSTGRES_PASSWORD_FILE

__all__ = ["main"]

# (what a logged statement contains, the kind it is counted under), first match wins
_KINDS = (
    ("rate_buckets", "rate limiter"),
    ("pg_advisory", "advisory locks"),
    ("INSERT", "writes"),
    ("UPDATE", "writes"),
    ("DELETE", "writes"),
    ("SELECT", "reads"),
)
_STATEMENT = re.compile(r"LOG:  (?:execute [^:]*|statement): (.*)")


def _kind(text: str) -> str:
    for needle, kind in _KINDS:
        if needle in text:
            return kind
    return "other"


async def _logging(dsn: str, on: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if on:
            await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        else:
            await conn.execute("ALTER SYSTEM RESET log_statement")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def _count(
    stack: UpStack, clients: int, seconds: float
) -> tuple[int, Counter[str], Counter[str]]:
    data = stack.dir / "data" / "postgres"
    password_file = stack.dir / "data" / POSTGRES_PASSWORD_FILE
    # A tree from before the stack had credentials writes no password: trust then.
    user = f"postgres:{password_file.read_text().strip()}" if password_file.exists() else "postgres"
    port = (data / "port").read_text().strip()
    dsn = f"postgresql://{user}@127.0.0.1:{port}/postgres"
    log = data / "postgres.log"
    http, api, version = await _prepare(stack, clients, "example")
    try:
        await _logging(dsn, True)
        await asyncio.sleep(0.5)  # every backend has reloaded its configuration
        offset = log.stat().st_size
        rate, _ = await _throughput(api, version, _png(), clients, seconds, stack.pid, False)
        jobs = round(rate * seconds)
        await _logging(dsn, False)
        await asyncio.sleep(0.5)
    finally:
        await http.close()
    kinds: Counter[str] = Counter()
    texts: Counter[str] = Counter()
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace").replace("\n\t", " ")  # continued lines
    for line in text.splitlines():
        found = _STATEMENT.search(line)
        if found and "log_statement" not in found.group(1):
            kinds[_kind(found.group(1))] += 1
            texts[" ".join(found.group(1).split())[:100]] += 1
    return jobs, kinds, texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tree", type=Path, help="another checkout (with its own .venv)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--set", metavar="CLINAI_NAME=VALUE", action="append", default=[])
    parser.add_argument("--show", type=int, default=0, help="the N most frequent statements")
    args = parser.parse_args(argv)
    env = dict(setting.split("=", 1) for setting in args.set)
    tree = args.tree.resolve() if args.tree else None
    stack = UpStack("process", DATA_PARENT, env, tree or ROOT)
    try:
        with stack:
            jobs, kinds, texts = asyncio.run(_count(stack, args.clients, args.seconds))
    finally:
        stack.remove()
    print(f"{jobs} jobs, {sum(kinds.values()) / max(jobs, 1):.3f} Postgres statements a job:")
    for kind, n in kinds.most_common():
        print(f"  {kind:>16}: {n / max(jobs, 1):.3f} a job ({n})")
    for text, n in texts.most_common(args.show):
        print(f"  {n / max(jobs, 1):6.3f}  {text}")


if __name__ == "__main__":
    main()

"""Commands per API key: a token bucket shared by every API process, kept in Postgres
(`_rate_bucket`), spent from leases held in each process's memory.

A key may send `burst` commands at once, then one every `1 / rate` seconds. A process
takes a key's tokens from Postgres in batches (a lease) and spends them in memory, so a
busy key's commands cost no statement: a lease of `size` tokens, taken again in the
background once half of it is spent, doubling while each lease lasts less than `LEASE_S`
and halving when one lasts more than twice that. A lease never exceeds `max_lease`: a
quarter of the burst, or the tokens the rate gives in `LEASE_S`, whichever is less.
Tokens a process holds and has not spent for `LEASE_S` go back to the bucket.

Tolerance, across any number of processes: tokens are taken before they are spent, so
the commands admitted for a key never exceed the bucket (`burst` plus `rate` a second);
they fall short of it by at most the tokens other processes hold for that key, under
`1.5 * max_lease` each, which come back within `LEASE_S` once those processes stop
spending them (or are refilled within `1.5 * LEASE_S` when a process dies holding them).
A refusal is remembered for at most `LEASE_S` (no statement per refused command). The
rate and burst are settings, the same for every key: a process restarted with new ones
has given back what it held (`close`), and its takes use the new ones at once.

Postgres unreachable: held tokens are still spent; a command needing more fails as the
lookup does, `503` with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import asyncpg
import msgspec

from services.api._rate_bucket import Bucket, Taken
from services.api.problems import ApiError

__all__ = ["LEASE_S", "RATE_STATE", "RateDecision", "RateLimiter"]

log = logging.getLogger("clinai.api")

RATE_STATE = "rate_limit"  # a request's decision in `request.state` (see _command_edge)
LEASE_S = 0.5  # tokens held and not spent for this long go back to the bucket
_PREFETCH_FROM = 4  # a lease this large is taken again in the background at half
_CLOSE_S = 2.0  # the longest a stopping process tries to give its tokens back
_FORGET_S = 60.0  # a key idle this long, holding nothing, leaves this process's memory
_UNREACHABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class _Lease(msgspec.Struct):
    """A key's tokens in this process: held, and how the next take is sized."""

    tokens: int = 0  # taken from the bucket, not yet spent
    size: int = 1  # what the next take asks for
    taken_at: float = -math.inf  # monotonic time of the last take
    spent_at: float = -math.inf  # monotonic time a token was last spent
    remaining: int = 0  # in the bucket after the last take (others' takes not seen)
    reset_at: float = 0.0  # monotonic time the bucket is full again, as of the last take
    refused_until: float = 0.0  # refused here, without a statement, until then
    retry_at: float = 0.0  # when the bucket has a token again, as of the last refusal
    failed_until: float = 0.0  # no background take before then (the last one failed)
    waiting: int = 0  # commands waiting for the take in flight
    take: asyncio.Task[int] | None = None  # the take in flight (one at a time per key)


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int  # the burst: commands that may be sent at once
    remaining: int  # commands that may be sent now
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until the next command is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as an ASGI response's (names in lower case)."""
        return [(name.lower().encode(), value.encode()) for name, value in self.headers().items()]


class RateLimiter:
    """`rate_per_s` commands a second per key, `burst` at once; 0: no limit. `run()`
    gives back idle leases until cancelled; `close()` gives back every lease."""

    def __init__(self, pool: asyncpg.Pool, *, rate_per_s: float, burst: int) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate_per_s must not be negative and burst must be at least 1")
        self.enabled = rate_per_s > 0
        self._bucket = Bucket(pool, rate_per_s=rate_per_s or 1.0, burst=burst)
        self._burst = burst
        self._rate = rate_per_s
        self.max_lease = max(1, min(burst // 4, int(rate_per_s * LEASE_S)))
        self._leases: dict[str, _Lease] = {}

    async def open(self) -> None:
        """Create the buckets' table (once, whichever API process comes first)."""
        if self.enabled:
            await self._bucket.open()

    async def hit(self, key: str) -> RateDecision:
        """One token for `key`: from this process's lease, else taken from the bucket
        (one take per key at a time; the commands arriving meanwhile wait for it)."""
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease()
        now = time.monotonic()
        if lease.tokens:
            return self._spend(key, lease, now)
        if now < lease.refused_until:
            return self._refused(lease, now)
        lease.waiting += 1
        try:
            while True:
                if lease.take is None:
                    lease.take = self._start_take(key, lease, now)
                took = await asyncio.shield(lease.take)
                now = time.monotonic()
                if lease.tokens:
                    return self._spend(key, lease, now)
                if not took:
                    return self._refused(lease, now)
                # Other waiters spent what this take got: take again.
        finally:
            lease.waiting -= 1

    def held(self, key: str) -> int:
        """The tokens this process holds for `key`, taken and not yet spent."""
        lease = self._leases.get(key)
        return 0 if lease is None else lease.tokens

    async def check(self, key: str) -> RateDecision:
        """The decision for one command of `key`; 429 when it is over the limit."""
        decision = await self.hit(key)
        if not decision.allowed:
            raise ApiError(
                429,
                "Too many requests",
                f"this API key may send {self._burst} commands at once and then "
                f"{self._rate:g} a second (settings CLINAI_RATE_LIMIT_BURST and "
                f"CLINAI_RATE_LIMIT_PER_S); retry after {decision.headers()['Retry-After']} s",
                headers=decision.headers(),
                extra={"limit": "rate_limit", "setting": "CLINAI_RATE_LIMIT_PER_S"},
            )
        return decision

    def _spend(self, key: str, lease: _Lease, now: float) -> RateDecision:
        lease.tokens -= 1
        lease.spent_at = now
        if (
            lease.size >= _PREFETCH_FROM
            and lease.tokens <= lease.size // 2
            and lease.take is None
            and now >= lease.failed_until
        ):
            lease.take = self._start_take(key, lease, now)  # before this lease runs out
        return RateDecision(
            True,
            self._burst,
            lease.remaining + lease.tokens,
            max(0.0, lease.reset_at - now),
            0.0,
        )

    def _refused(self, lease: _Lease, now: float) -> RateDecision:
        return RateDecision(
            False,
            self._burst,
            0,
            max(0.0, lease.reset_at - now),
            max(0.0, lease.retry_at - now),
        )

    def _start_take(self, key: str, lease: _Lease, now: float) -> asyncio.Task[int]:
        lasted = now - lease.taken_at
        if lasted < LEASE_S:
            lease.size = min(2 * lease.size, self.max_lease)
        elif lasted > 2 * LEASE_S:
            lease.size = max(1, lease.size // 2)
        task = asyncio.create_task(self._take(key, lease, max(lease.size, lease.waiting)))
        task.add_done_callback(_observed)
        return task

    async def _take(self, key: str, lease: _Lease, wanted: int) -> int:
        try:
            taken = await self._bucket.take(key, wanted)
        except _UNREACHABLE:
            lease.failed_until = time.monotonic() + LEASE_S
            raise
        finally:
            lease.take = None
        self._keep(lease, taken)
        return taken.tokens

    def _keep(self, lease: _Lease, taken: Taken) -> None:
        now = time.monotonic()
        if taken.tokens:
            lease.tokens += taken.tokens
            lease.taken_at = now
        lease.remaining = taken.remaining
        lease.reset_at = now + taken.reset_s
        if not taken.tokens:
            lease.retry_at = now + taken.retry_after_s
            lease.refused_until = now + min(taken.retry_after_s, LEASE_S)

    async def run(self) -> None:
        """Every half `LEASE_S`, give back the tokens of keys that spent none for
        `LEASE_S` (one statement for all of them), until cancelled."""
        while self.enabled:
            await asyncio.sleep(LEASE_S / 2)  # a period, not a synchronisation
            await self.give_back(time.monotonic() - LEASE_S)

    async def give_back(self, idle_since: float = math.inf) -> None:
        """Give back the tokens of keys that spent none since `idle_since` (every
        key's by default); those that cannot be given back are lost to this period."""
        back: dict[str, int] = {}
        for key, lease in list(self._leases.items()):
            if lease.take is not None or lease.waiting or lease.spent_at >= idle_since:
                continue  # in use
            if lease.tokens:
                back[key] = lease.tokens
                lease.tokens = 0
                lease.size = max(1, lease.size // 2)
            elif lease.spent_at < idle_since - _FORGET_S and lease.refused_until < idle_since:
                del self._leases[key]
        try:
            await self._bucket.give_back(back)
        except _UNREACHABLE as err:
            log.debug("rate limit: %d tokens not given back (%r)", sum(back.values()), err)

    async def close(self) -> None:
        """Give back every key's tokens, once the takes in flight are done (this
        process is stopping; within `_CLOSE_S`, else they are lost to this period)."""
        if not self.enabled:
            return
        takes = [lease.take for lease in self._leases.values() if lease.take is not None]
        with contextlib.suppress(TimeoutError, *_UNREACHABLE):
            async with asyncio.timeout(_CLOSE_S):
                await asyncio.gather(*takes, return_exceptions=True)
                await self.give_back()


def _observed(task: asyncio.Task[int]) -> None:
    """A take nobody awaits (a background one) failing: the next take that a command
    waits for will tell."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("rate limit: a background take failed (%r)", task.exception())

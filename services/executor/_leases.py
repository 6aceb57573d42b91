"""An owner's running jobs on every executor, counted in a NATS KV bucket, so that the
running cap (`max_running_jobs`) holds across executor processes and hosts, not per
executor.

One key per owner holds the leases of their running jobs: job id -> expiry (unix
seconds). A lease is taken by a compare-and-set update of the key (checked against its
revision, so two executors never both take the last place), renewed every `renew_s`
while the job runs, and given back when it ends. The leases of an executor that died
expire after `ttl_s`, which gives their places back. A job redelivered after its
executor died takes over its own lease. Only owners with a cap pay for this: for the
others nothing is read or written.

NATS unreachable: the cap is not enforced across executors until it is back (each
executor still applies it to its own jobs), rather than stopping every capped owner's
jobs during an outage the job path would have to survive anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

__all__ = ["RUNNING_BUCKET", "OwnerLeases"]

log = logging.getLogger("clinai.executor")

RUNNING_BUCKET = "clinai_running_jobs"

_decode = msgspec.json.Decoder(dict[str, float]).decode
_encode = msgspec.json.Encoder().encode


class OwnerLeases:
    def __init__(
        self,
        kv: KeyValue,
        *,
        ttl_s: float = 30.0,
        renew_s: float = 10.0,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < renew_s < ttl_s or poll_s <= 0:
            raise ValueError("OwnerLeases needs 0 < renew_s < ttl_s and poll_s > 0")
        self._kv = kv
        self._ttl_s = ttl_s
        self._renew_s = renew_s
        self._poll_s = poll_s
        self._clock = clock
        self._held: dict[str, set[str]] = {}  # owner -> job ids leased here
        self._renewing: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        replicas: int = 1,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> OwnerLeases:
        try:
            kv = await js.key_value(RUNNING_BUCKET)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(bucket=RUNNING_BUCKET, history=1, replicas=replicas)
            )
        return cls(kv, ttl_s=ttl_s, clock=clock)

    async def take(self, owner: str, job_id: str, cap: int) -> None:
        """Wait until fewer than `cap` of `owner`'s jobs hold a lease, and take one for
        `job_id`. Pair with `give_back`."""
        if await self.try_take(owner, job_id, cap):
            return
        # Woken by every change of the owner's key (a place given back anywhere), and
        # every `poll_s` for a lease that expired without one.
        watcher = await self._kv.watch(owner, meta_only=True)
        try:
            while not await self.try_take(owner, job_id, cap):
                with contextlib.suppress(nats.errors.TimeoutError):
                    await watcher.updates(timeout=self._poll_s)  # type: ignore[no-untyped-call]
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def try_take(self, owner: str, job_id: str, cap: int) -> bool:
        """Take a lease for `job_id` if `owner` has fewer than `cap`; False if not."""
        while True:
            try:
                leases, revision = await self._read(owner)
            except (nats.errors.Error, TimeoutError) as err:
                log.warning("running leases unreadable (%r): the cap holds per executor", err)
                self._held.setdefault(owner, set()).add(job_id)
                return True
            if job_id not in leases and len(leases) >= cap:
                return False
            leases[job_id] = self._clock() + self._ttl_s
            if await self._write(owner, leases, revision):
                self._held.setdefault(owner, set()).add(job_id)
                self._start_renewing()
                return True

    async def give_back(self, owner: str, job_id: str) -> None:
        held = self._held.get(owner)
        if held is not None:
            held.discard(job_id)
            if not held:
                del self._held[owner]
        while True:
            try:
                leases, revision = await self._read(owner)
                if leases.pop(job_id, None) is None:
                    return
                if await self._write(owner, leases, revision):
                    return
            except (nats.errors.Error, TimeoutError) as err:
                log.warning("could not give back the lease of job %s (%r)", job_id, err)
                return  # it expires by itself

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing

    async def renew(self) -> None:
        """Move the expiry of every lease held here `ttl_s` ahead (done every `renew_s`
        while any is held)."""
        for owner in list(self._held):
            while True:
                try:
                    leases, revision = await self._read(owner)
                except (nats.errors.Error, TimeoutError) as err:
                    log.warning("could not renew running leases (%r)", err)
                    break
                expiry = self._clock() + self._ttl_s
                for job_id in self._held.get(owner, ()):
                    leases[job_id] = expiry
                if await self._write(owner, leases, revision):
                    break

    def _start_renewing(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew_while_held())

    async def _renew_while_held(self) -> None:
        while self._held:
            await asyncio.sleep(self._renew_s)
            await self.renew()

    async def _read(self, owner: str) -> tuple[dict[str, float], int | None]:
        """The owner's live leases (expired ones dropped) and the key's revision."""
        try:
            entry = await self._kv.get(owner)
        except KeyNotFoundError:
            return {}, None
        now = self._clock()
        leases = _decode(entry.value) if entry.value else {}
        return {job: until for job, until in leases.items() if until > now}, entry.revision

    async def _write(self, owner: str, leases: dict[str, float], revision: int | None) -> bool:
        """Compare-and-set; False when another executor wrote the key meanwhile."""
        try:
            if revision is None:
                await self._kv.create(owner, _encode(leases))
            else:
                await self._kv.update(owner, _encode(leases), last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

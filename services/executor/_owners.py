"""The gate in front of the executor's job handler: a requested job waits for a slot
shared fairly between owners (`FairSlots`), within its owner's running cap. A job
delivered past its deadline takes no slot: the handler aborts it at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import nats.errors

from events import EventStore, EventStoreError, JobRequested
from services.domain.limits import fold_user_limits
from services.executor._fair import FairSlots
from services.executor._leases import OwnerLeases
from services.subscribers import Delivery, Handler

__all__ = ["FairGate", "RunningCaps"]

log = logging.getLogger("clinai.executor")

_CAPS_KEPT = 10_000


class RunningCaps:
    """How many jobs of an owner may run at once here: the user's own limit read from
    the log (kept for `ttl_s`, so an admin's change applies within that), else
    `default` (0: no cap)."""

    def __init__(
        self,
        store: EventStore,
        default: int,
        *,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._default = default
        self._ttl_s = ttl_s
        self._clock = clock
        self._known: dict[str, tuple[float, int]] = {}

    async def cap(self, owner: str) -> int:
        now = self._clock()
        known = self._known.get(owner)
        if known is not None and known[0] > now:
            return known[1]
        try:
            own = fold_user_limits((await self._store.read_aggregate("user", owner)).events)
        except ValueError:  # not a user id the log can hold: no limits of its own
            own = None
        except (EventStoreError, nats.errors.Error, TimeoutError) as err:
            # The log is away: keep what we knew.
            log.warning("could not read the limits of owner %s (%r)", owner, err)
            return known[1] if known is not None else self._default
        cap = self._default
        if own is not None and own.max_running_jobs is not None:
            cap = own.max_running_jobs
        if len(self._known) >= _CAPS_KEPT:
            self._known.clear()
        self._known[owner] = (now + self._ttl_s, cap)
        return cap


class FairGate:
    """Wraps the job handler: `JobRequested` runs once its owner's turn has come,
    anything else (a cancel request) at once."""

    def __init__(
        self,
        handler: Handler,
        slots: FairSlots,
        caps: RunningCaps,
        leases: OwnerLeases | None = None,
    ) -> None:
        self._handler = handler
        self._slots = slots
        self._caps = caps
        self._leases = leases

    async def __call__(self, delivery: Delivery) -> None:
        match delivery.event:
            case JobRequested(deadline=deadline) if (
                deadline is not None and datetime.now(UTC) >= deadline
            ):
                await self._handler(delivery)  # ends it without running it
            case JobRequested(owner=owner, aggregate_id=job_id):
                cap = await self._caps.cap(owner)
                # A capped owner's place on every executor first (`_leases`), then a
                # slot here.
                if cap and self._leases is not None:
                    await self._leases.take(owner, job_id, cap)
                try:
                    # In submission order: a redelivered job (its executor died)
                    # before those submitted after it.
                    await self._slots.acquire(owner, cap, seq=delivery.seq)
                    try:
                        await self._handler(delivery)
                    finally:
                        self._slots.release(owner)
                finally:
                    if cap and self._leases is not None:
                        await self._leases.give_back(owner, job_id)
            case _:
                await self._handler(delivery)

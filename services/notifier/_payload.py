"""What a delivery carries: the resource as the API returns it, as of the event's
sequence. The resource's row is folded from its own events up to that sequence with the
projection's fold, so the body does not depend on how far the projector has got."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import orjson

from events import AnyEvent, EventStore, JobRequested, ModelCreated, StoredEvent, VersionUploaded
from projections import queries
from projections.apply import Tables, fold
from services.blobstore import BlobStore
from services.domain.views import job_view, model_view, version_view

__all__ = ["Snapshot", "Snapshots", "webhook_body"]

_TABLE = {"job": "jobs", "version": "versions", "model": "models"}
_CREATES = (JobRequested, VersionUploaded, ModelCreated)


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    owner: str
    data: dict[str, Any]
    occurred_at: datetime  # of the event at the snapshot's sequence
    job_webhook: dict[str, Any] | None = None  # a job's own {url, events}


class Snapshots:
    def __init__(self, store: EventStore, blobs: BlobStore) -> None:
        self._store = store
        self._blobs = blobs

    async def at(
        self, aggregate: str, resource_id: str, seq: int, event: AnyEvent | None = None
    ) -> Snapshot | None:
        """The resource right after event `seq` (given as `event` when at hand: a
        creating event needs no read); None when it is not one webhooks carry."""
        table = _TABLE.get(aggregate)
        if table is None:
            return None
        if isinstance(event, _CREATES):
            events = [StoredEvent(seq, event)]
        else:
            # Holding event `seq` (a lagging replica's answer would not: read again).
            history = await self._store.read_aggregate(aggregate, resource_id, including=seq)
            events = [e for e in history.events if e.seq <= seq]
        if not events or events[-1].seq != seq:
            return None
        tables: Tables = {}
        fold(events, tables)
        row = tables.get(table, {}).get(resource_id)
        if row is None:
            return None
        data: dict[str, Any]
        hook = None
        match aggregate:
            case "job":
                data = msgspec.to_builtins(await job_view(queries.JobView(**row), self._blobs))
                hook = row["webhook"]
            case "version":
                data = msgspec.to_builtins(version_view(queries.VersionView(**row)))
            case _:
                data = msgspec.to_builtins(model_view(queries.ModelView(**row)))
        return Snapshot(
            owner=row["owner"],
            data=data,
            occurred_at=events[-1].event.occurred_at,
            job_webhook=hook,
        )


def webhook_body(event_type: str, occurred_at: datetime, data: dict[str, Any]) -> bytes:
    """The Standard Webhooks JSON payload: {type, timestamp, data}."""
    return orjson.dumps(
        {"type": event_type, "timestamp": occurred_at, "data": data},
        default=msgspec.to_builtins,
        option=orjson.OPT_UTC_Z,
    )

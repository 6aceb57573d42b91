"""The fold of events onto read-model rows.

A batch is applied in three steps (`projections._pipeline.PipelinedApplier` drives
them): load the rows the batch touches (`rows_to_load`: one `SELECT ... WHERE id =
ANY($1)` per table, skipping ids the batch itself creates), fold every event onto those
rows in memory (`fold`), then upsert each table once, with the checkpoint in the same
transaction (`projections.checkpoint`). Terminal states never regress; an event whose row
does not exist is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from events import (
    TERMINAL_JOB_STATUSES,
    TERMINAL_VERSION_STATUSES,
    AnyEvent,
    ApiKeyIssued,
    ApiKeyRevoked,
    BuildFailed,
    BuildLogAppended,
    BuildStarted,
    JobAborted,
    JobCanceled,
    JobCancelRequested,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSucceeded,
    ModelCreated,
    ModelDeleted,
    ModelNameClaimed,
    ModelNameReleased,
    ModelUpdated,
    ModelVersionAdded,
    StoredEvent,
    UserCreated,
    UserLimitsSet,
    UserPasswordSet,
    VersionBuilt,
    VersionUploaded,
)
from projections._fold_webhooks import (
    WEBHOOK_EVENTS,
    WEBHOOK_TARGETS,
    extra_loads,
    fold_webhook_event,
)
from projections.urls import redacted_url

__all__ = [
    "PROJECTION",
    "Row",
    "Tables",
    "fold",
    "rows_to_load",
]

PROJECTION: Final = "read_models"  # the checkpoint row of this projection

Row = dict[str, Any]
# table name -> key -> row; build_log_chunks is keyed by (version_id, index)
Tables = dict[str, dict[Any, Row]]

# Event type -> (table, creates the row). Events that create a row need no load.
_TARGET: Final[dict[type[AnyEvent], tuple[str, bool]]] = {
    UserCreated: ("users", True),
    UserLimitsSet: ("users", False),
    UserPasswordSet: ("users", False),
    ApiKeyIssued: ("api_keys", True),
    ApiKeyRevoked: ("api_keys", False),
    ModelCreated: ("models", True),
    ModelUpdated: ("models", False),
    ModelDeleted: ("models", False),
    ModelVersionAdded: ("models", False),
    VersionUploaded: ("versions", True),
    BuildStarted: ("versions", False),
    VersionBuilt: ("versions", False),
    BuildFailed: ("versions", False),
    JobRequested: ("jobs", True),
    JobStarted: ("jobs", False),
    JobSucceeded: ("jobs", False),
    JobFailed: ("jobs", False),
    JobCancelRequested: ("jobs", False),
    JobCanceled: ("jobs", False),
    JobAborted: ("jobs", False),
    **WEBHOOK_TARGETS,
}


def rows_to_load(events: Iterable[StoredEvent]) -> dict[str, list[str]]:
    """Per table, the ids the batch updates but does not create first."""
    seen: dict[str, set[str]] = {}
    load: dict[str, list[str]] = {}
    for stored in events:
        target = _TARGET.get(type(stored.event))
        if target is None:
            continue
        table, creates = target
        wanted = [(table, stored.event.aggregate_id, creates)]
        wanted += [(t, key, False) for t, key in extra_loads(stored.event)]
        for table, aggregate_id, creates in wanted:
            ids = seen.setdefault(table, set())
            if aggregate_id in ids:
                continue
            ids.add(aggregate_id)
            if not creates:
                load.setdefault(table, []).append(aggregate_id)
    return load


def fold(events: Iterable[StoredEvent], tables: Tables) -> set[tuple[str, Any]]:
    """Apply `events` in order onto `tables` (mutated); return the (table, key) of
    every row written. `tables` holds the loaded rows, keyed by table name."""
    touched: set[tuple[str, Any]] = set()
    users = tables.setdefault("users", {})
    keys = tables.setdefault("api_keys", {})
    models = tables.setdefault("models", {})
    versions = tables.setdefault("versions", {})
    chunks = tables.setdefault("build_log_chunks", {})
    jobs = tables.setdefault("jobs", {})
    for stored in events:
        seq, event = stored.seq, stored.event
        at = event.occurred_at
        rid = event.aggregate_id
        row: Row | None
        match event:
            case UserCreated():
                users[rid] = {
                    "id": rid,
                    "name": event.name,
                    "email": event.email,
                    "is_admin": event.is_admin,
                    "created_at": at,
                    "max_queued_jobs": None,
                    "max_running_jobs": None,
                    "password_hash": None,
                    "password_set_at": None,
                    "last_seq": seq,
                }
                touched.add(("users", rid))
            case UserLimitsSet():
                row = users.get(rid)
                if row is not None:
                    row["max_queued_jobs"] = event.max_queued_jobs
                    row["max_running_jobs"] = event.max_running_jobs
                    row["last_seq"] = seq
                    touched.add(("users", rid))
            case UserPasswordSet():
                if (row := users.get(rid)) is not None:
                    row["password_hash"] = event.password_hash
                    row["password_set_at"] = at
                    row["last_seq"] = seq
                    touched.add(("users", rid))
            case ApiKeyIssued():
                keys[rid] = {
                    "id": rid,
                    "user_id": event.user_id,
                    "name": event.name,
                    "key_hash": event.key_hash,
                    "prefix": event.prefix,
                    "is_admin": event.is_admin,
                    "created_at": at,
                    "revoked_at": None,
                    "last_seq": seq,
                }
                touched.add(("api_keys", rid))
            case ApiKeyRevoked():
                if (row := keys.get(rid)) is not None:
                    if row["revoked_at"] is None:
                        row["revoked_at"] = at
                    row["last_seq"] = seq
                    touched.add(("api_keys", rid))
            case ModelCreated():
                models[rid] = {
                    "id": rid,
                    "owner": event.owner,
                    "name": event.name,
                    "description": event.description,
                    "visibility": event.visibility,
                    "latest_version": 0,
                    "created_at": at,
                    "updated_at": at,
                    "deleted_at": None,
                    "last_seq": seq,
                }
                touched.add(("models", rid))
            case ModelUpdated() | ModelDeleted() | ModelVersionAdded():
                if (row := models.get(rid)) is None:
                    continue
                _fold_model(event, row, at)
                row["updated_at"] = at
                row["last_seq"] = seq
                touched.add(("models", rid))
            case ModelNameClaimed() | ModelNameReleased():
                pass
            case VersionUploaded():
                versions[rid] = {
                    "id": rid,
                    "model_id": event.model_id,
                    "owner": event.owner,
                    "number": event.number,
                    "status": "uploaded",
                    "package_key": event.package_key,
                    "package_hash": event.package_hash,
                    "requirements_hash": event.requirements_hash,
                    "size_bytes": event.size_bytes,
                    "filename": event.filename,
                    "runtime": None,
                    "artifact": None,
                    "artifact_details": None,
                    "build_attempt": 0,
                    "build_duration_s": None,
                    "failure_reason": None,
                    "log_tail": None,
                    "log_key": None,
                    "reused_from": None,
                    "created_at": at,
                    "updated_at": at,
                    "built_at": None,
                    "last_seq": seq,
                }
                touched.add(("versions", rid))
            case BuildLogAppended():
                key = (rid, event.index)
                chunks[key] = {
                    "version_id": rid,
                    "index": event.index,
                    "text": event.text,
                    "seq": seq,
                }
                touched.add(("build_log_chunks", key))
            case BuildStarted() | VersionBuilt() | BuildFailed():
                row = versions.get(rid)
                if row is None or row["status"] in TERMINAL_VERSION_STATUSES:
                    continue
                _fold_build(event, row, at)
                row["updated_at"] = at
                row["last_seq"] = seq
                touched.add(("versions", rid))
            case JobRequested():
                jobs[rid] = {
                    "id": rid,
                    "owner": event.owner,
                    "model_id": event.model_id,
                    "version_id": event.version_id,
                    "status": "queued",
                    "input_key": event.input_key,
                    "input_filename": event.input_filename,
                    "input_size_bytes": event.input_size_bytes,
                    "input_url": None if event.input_url is None else redacted_url(event.input_url),
                    "params": event.params,
                    "inputs": event.inputs,
                    "timeout_s": event.timeout_s,
                    "deadline": event.deadline,
                    "webhook": None
                    if event.webhook is None
                    else msgspec.to_builtins(event.webhook),
                    "cancel_requested": False,
                    "attempt": 0,
                    "result": None,
                    "outputs": [],
                    "result_blob": None,
                    "outputs_blob": None,
                    "error_kind": None,
                    "error_message": None,
                    "traceback": None,
                    "timings": None,
                    "log_key": None,
                    "created_at": at,
                    "started_at": None,
                    "finished_at": None,
                    "updated_at": at,
                    "last_seq": seq,
                }
                touched.add(("jobs", rid))
            case (
                JobStarted()
                | JobSucceeded()
                | JobFailed()
                | JobCancelRequested()
                | JobCanceled()
                | JobAborted()
            ):
                if (row := jobs.get(rid)) is None or not _fold_job(event, row, at):
                    continue
                row["updated_at"] = at
                row["last_seq"] = seq
                touched.add(("jobs", rid))
            case _ if isinstance(event, WEBHOOK_EVENTS):
                fold_webhook_event(stored, tables, touched)
    return touched


def _fold_model(event: ModelUpdated | ModelDeleted | ModelVersionAdded, row: Row, at: Any) -> None:
    match event:
        case ModelUpdated():
            if event.name is not None:
                row["name"] = event.name
            if event.description is not None:
                row["description"] = event.description
            if event.visibility is not None:
                row["visibility"] = event.visibility
        case ModelDeleted():
            if row["deleted_at"] is None:
                row["deleted_at"] = at
        case ModelVersionAdded():
            row["latest_version"] = max(row["latest_version"], event.number)


def _fold_build(event: BuildStarted | VersionBuilt | BuildFailed, row: Row, at: Any) -> None:
    match event:
        case BuildStarted():
            row["status"] = "building"
            row["runtime"] = event.runtime
            row["build_attempt"] = event.attempt
        case VersionBuilt():
            row["status"] = "ready"
            row["runtime"] = event.runtime
            row["artifact"] = event.artifact
            row["build_duration_s"] = event.duration_s
            row["artifact_details"] = event.artifact_details
            row["log_key"] = event.log_key
            row["reused_from"] = event.reused_from
            row["built_at"] = at
        case BuildFailed():
            row["status"] = "failed"
            row["failure_reason"] = event.reason
            row["log_tail"] = event.log_tail
            row["log_key"] = event.log_key
            row["build_duration_s"] = event.duration_s


def _fold_job(
    event: JobStarted | JobSucceeded | JobFailed | JobCancelRequested | JobCanceled | JobAborted,
    row: Row,
    at: Any,
) -> bool:
    """Fold one job event; False when it is ignored (it would leave a terminal state)."""
    terminal = row["status"] in TERMINAL_JOB_STATUSES
    match event:
        case JobStarted():
            if not terminal:
                row["status"] = "running"
            if row["started_at"] is None:
                row["started_at"] = at
            row["attempt"] = max(row["attempt"], event.attempt)
        case JobCancelRequested():
            if terminal:
                return False
            row["cancel_requested"] = True
        case JobSucceeded():
            if terminal:
                return False
            row["status"] = "succeeded"
            row["result"] = event.result if event.result_blob is None else None
            row["outputs"] = msgspec.to_builtins(event.outputs)
            row["result_blob"] = msgspec.to_builtins(event.result_blob)
            row["outputs_blob"] = msgspec.to_builtins(event.outputs_blob)
            row["timings"] = msgspec.to_builtins(event.timings)
            row["log_key"] = event.log_key
            row["finished_at"] = at
        case JobFailed():
            if terminal:
                return False
            row["status"] = "canceled" if event.kind == "canceled" else "failed"
            row["error_kind"] = event.kind
            row["error_message"] = event.message
            row["traceback"] = event.traceback
            row["timings"] = msgspec.to_builtins(event.timings)
            row["log_key"] = event.log_key
            row["finished_at"] = at
        case JobCanceled():
            if terminal:
                return False
            row["status"] = "canceled"
            row["error_kind"] = "canceled"
            row["error_message"] = event.message
            row["finished_at"] = at
        case JobAborted():
            if terminal:
                return False
            row["status"] = "aborted"
            row["error_kind"] = event.reason
            row["error_message"] = event.message
            row["finished_at"] = at
    return True

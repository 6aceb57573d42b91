"""How `clinai tail` prints an event: one human line (time, sequence, type, aggregate id
and the few fields that matter for that type, coloured on a terminal), or one NDJSON
line with the full envelope and `seq`."""

from __future__ import annotations

from datetime import UTC
from typing import Any, Final

import orjson

from events import (
    AnyEvent,
    ApiKeyIssued,
    BuildFailed,
    BuildLogAppended,
    BuildStarted,
    JobAborted,
    JobCanceled,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSucceeded,
    ModelCreated,
    ModelNameClaimed,
    ModelNameReleased,
    ModelUpdated,
    ModelVersionAdded,
    StoredEvent,
    UserCreated,
    UserLimitsSet,
    VersionBuilt,
    VersionUploaded,
    WebhookCreated,
    WebhookDeliveryAttempted,
    WebhookDeliveryQueued,
    WebhookDisabled,
    WebhookRedeliveryRequested,
    WebhookSecretRotated,
    WebhookUpdated,
    event_to_builtins,
)

__all__ = ["format_human", "format_json"]

_RESET, _DIM, _RED, _GREEN, _YELLOW, _CYAN = (
    "\x1b[0m",
    "\x1b[2m",
    "\x1b[31m",
    "\x1b[32m",
    "\x1b[33m",
    "\x1b[36m",
)
_FAILED: Final = frozenset(
    {"JobFailed", "BuildFailed", "WebhookDisabled", "JobCanceled", "JobAborted"}
)
_SUCCEEDED: Final = frozenset({"JobSucceeded", "VersionBuilt", "WebhookEnabled"})
_STARTED: Final = frozenset({"JobStarted", "BuildStarted", "JobRequested", "VersionUploaded"})


def _short(text: str, limit: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _kv(**fields: Any) -> str:
    parts = []
    for key, value in fields.items():
        if value is None or value == "" or value == ():
            continue
        if isinstance(value, float):
            value = f"{value:.3g}"
        elif isinstance(value, tuple | list):
            value = ",".join(str(v) for v in value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _changed(event: ModelUpdated | WebhookUpdated) -> str:
    data = {k: v for k, v in event_to_builtins(event).items() if k in _UPDATE_FIELDS}
    return _kv(**{k: v for k, v in data.items() if v is not None})


_UPDATE_FIELDS: Final = frozenset({"name", "description", "visibility", "url", "events"})


def _details(event: AnyEvent) -> str:
    match event:
        case UserCreated():
            return _kv(name=event.name, admin=event.is_admin or None)
        case UserLimitsSet():
            return _kv(max_queued=event.max_queued_jobs, max_running=event.max_running_jobs)
        case ApiKeyIssued():
            return _kv(user=event.user_id, name=event.name, prefix=event.prefix)
        case ModelCreated():
            return _kv(owner=event.owner, name=event.name, visibility=event.visibility)
        case ModelUpdated() | WebhookUpdated():
            return _changed(event)
        case ModelNameClaimed() | ModelNameReleased():
            return _kv(name=event.name, model=event.model_id)
        case ModelVersionAdded():
            return _kv(version=event.version_id, number=event.number)
        case VersionUploaded():
            return _kv(model=event.model_id, number=event.number, bytes=event.size_bytes)
        case BuildStarted():
            return _kv(runtime=event.runtime, attempt=event.attempt)
        case BuildLogAppended():
            return _kv(index=event.index, text=repr(_short(event.text, 50)))
        case VersionBuilt():
            return _kv(runtime=event.runtime, took_s=event.duration_s, reused=event.reused_from)
        case BuildFailed():
            return _kv(reason=repr(_short(event.reason)))
        case JobRequested():
            hook = event.webhook.url if event.webhook is not None else None
            return _kv(
                owner=event.owner,
                version=event.version_id,
                input=event.input_filename,
                webhook=hook,
            )
        case JobStarted():
            return _kv(worker=event.worker, attempt=event.attempt)
        case JobSucceeded():
            blobs = event.result_blob, event.outputs_blob
            return _kv(
                outputs=len(event.outputs) if blobs[1] is None else "in-blob",
                result_bytes=None if blobs[0] is None else blobs[0].size_bytes,
                run_s=event.timings.run_s,
            )
        case JobFailed():
            return _kv(
                kind=event.kind, message=repr(_short(event.message)), attempts=event.attempts
            )
        case JobCanceled():
            return _kv(message=repr(_short(event.message)))
        case JobAborted():
            return _kv(reason=event.reason, message=repr(_short(event.message)))
        case WebhookCreated():
            return _kv(owner=event.owner, url=event.url, events=event.events)
        case WebhookSecretRotated():
            return _kv(generation=event.generation)
        case WebhookDisabled():
            return _kv(reason=repr(_short(event.reason)))
        case WebhookDeliveryQueued():
            return _kv(endpoint=event.endpoint_id, type=event.event_type, source=event.source_seq)
        case WebhookDeliveryAttempted():
            return _kv(
                endpoint=event.endpoint_id,
                attempt=event.attempt,
                outcome=event.outcome,
                status=event.status_code,
                ms=event.latency_ms,
                error=repr(_short(event.error)) if event.error else None,
            )
        case WebhookRedeliveryRequested():
            return _kv(endpoint=event.endpoint_id)
    return ""


def _colour_of(event: AnyEvent) -> str:
    name = event.type
    if isinstance(event, WebhookDeliveryAttempted):
        return {"succeeded": _GREEN, "retrying": _YELLOW}.get(event.outcome, _RED)
    if name in _FAILED:
        return _RED
    if name in _SUCCEEDED:
        return _GREEN
    if name in _STARTED:
        return _YELLOW
    return _CYAN


def format_human(stored: StoredEvent, *, colour: bool = False) -> str:
    """`2025-01-02T03:04:05.678Z  #42  JobSucceeded  job_…  outputs=1 run_s=1.2`"""
    event = stored.event
    at = event.occurred_at.astimezone(UTC)
    when = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    seq = f"#{stored.seq}"
    details = _details(event)
    if colour:
        kind = _colour_of(event)
        head = f"{_DIM}{when}  {seq:>8}{_RESET}  {kind}{event.type:<26}{_RESET}"
    else:
        head = f"{when}  {seq:>8}  {event.type:<26}"
    return f"{head}  {event.aggregate_id}  {details}".rstrip()


def format_json(stored: StoredEvent) -> str:
    """The full envelope with `seq`, one line (decodes back with `events.decode_event`)."""
    return orjson.dumps({"seq": stored.seq, **event_to_builtins(stored.event)}).decode()

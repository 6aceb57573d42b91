"""What the API answers, as msgspec types: the handlers encode these, and the OpenAPI
document's schemas are generated from them (`services.api.openapi`). `seq`, where a
command answers it, is the stream sequence its events were appended at (read your
writes with `?after_seq=`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from services.domain.views import Job, Model, Output, ResultBlob, Version

__all__ = [
    "Accepted",
    "ApiKey",
    "ApiKeyList",
    "CreatedKey",
    "CreatedModel",
    "CreatedUpload",
    "CreatedUser",
    "CreatedVersion",
    "CreatedWebhook",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryList",
    "Health",
    "Job",
    "JobOutputs",
    "JobPage",
    "LimitValues",
    "Limits",
    "LogChunk",
    "Me",
    "Model",
    "ModelPage",
    "Output",
    "Problem",
    "QueuedJob",
    "Ready",
    "ResultBlob",
    "RotatedSecret",
    "SigningSecret",
    "Version",
    "VersionList",
    "VersionLog",
    "Webhook",
    "WebhookList",
]

Seq = int | UnsetType


class Problem(msgspec.Struct, kw_only=True):
    """An error (RFC 9457, application/problem+json): `detail` says what to do. Some
    carry more members (e.g. `field`, `expected`, `got` for a bad input)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class Health(msgspec.Struct, kw_only=True):
    status: str


class Ready(msgspec.Struct, kw_only=True):
    status: str
    projection_seq: int | None
    stream_seq: int | None
    quarantined_events: int | None
    long_polls_waiting: int


class Accepted(msgspec.Struct, kw_only=True):
    """A command taken: the resource's id and what it becomes."""

    id: str
    status: str
    seq: Seq = UNSET


class CreatedModel(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    name: str
    description: str
    visibility: str
    latest_version: int
    seq: Seq = UNSET


class ModelPage(msgspec.Struct, kw_only=True):
    items: list[Model]
    next_cursor: str | None


class CreatedVersion(msgspec.Struct, kw_only=True):
    id: str
    model_id: str
    number: int
    status: str
    package_hash: str
    size_bytes: int
    seq: Seq = UNSET


class VersionList(msgspec.Struct, kw_only=True):
    items: list[Version]


class LogChunk(msgspec.Struct, kw_only=True):
    index: int
    text: str


class VersionLog(msgspec.Struct, kw_only=True):
    version_id: str
    status: str
    chunks: list[LogChunk]
    next: int


class QueuedJob(msgspec.Struct, kw_only=True):
    """A job just submitted (without `?wait=`, or still queued when the wait ended)."""

    id: str
    status: str
    model_id: str
    version_id: str
    input_filename: str
    params: dict[str, Any]
    timeout_s: float
    deadline: datetime | None = None
    inputs: dict[str, Any] | UnsetType = UNSET
    seq: Seq = UNSET


class JobPage(msgspec.Struct, kw_only=True):
    items: list[Job]
    next_cursor: str | None


class JobOutputs(msgspec.Struct, kw_only=True):
    job_id: str
    status: str
    items: list[Output]


class CreatedUpload(msgspec.Struct, kw_only=True):
    """Send the file's bytes as one `method` request to `url` with exactly `headers`,
    before `expires_at` (seconds since the epoch); then name `id` as a job's input."""

    id: str
    url: str
    method: str
    headers: dict[str, str]
    expires_at: int
    max_bytes: int
    filename: str


class KeySecret(msgspec.Struct, kw_only=True):
    id: str
    secret: str


class CreatedUser(msgspec.Struct, kw_only=True):
    id: str
    name: str
    email: str | None
    is_admin: bool
    api_key: KeySecret
    seq: Seq = UNSET


class Me(msgspec.Struct, kw_only=True):
    user_id: str
    key_id: str
    is_admin: bool


class CreatedKey(msgspec.Struct, kw_only=True):
    """`secret` is shown once, here."""

    id: str
    name: str
    secret: str
    seq: Seq = UNSET


class ApiKey(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    name: str
    prefix: str
    is_admin: bool
    user_is_admin: bool
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyList(msgspec.Struct, kw_only=True):
    items: list[ApiKey]


class LimitValues(msgspec.Struct, kw_only=True):
    """null: the operator's default (in `own`), or no limit (in `in_force`)."""

    max_queued_jobs: int | None
    max_running_jobs: int | None


class Limits(msgspec.Struct, kw_only=True):
    user_id: str
    own: LimitValues
    in_force: LimitValues
    seq: Seq = UNSET


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    url: str
    events: list[str]
    description: str
    generation: int
    rotated_at: datetime | None
    previous_valid_until: datetime | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    deleted_at: datetime | None
    consecutive_failures: int
    failing_since: datetime | None
    last_delivery_at: datetime | None
    created_at: datetime
    updated_at: datetime
    seq: Seq = UNSET


class CreatedWebhook(msgspec.Struct, kw_only=True):
    """`secret` (which signs the deliveries) is shown once, here."""

    id: str
    owner: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    generation: int
    secret: str
    seq: Seq = UNSET


class WebhookList(msgspec.Struct, kw_only=True):
    items: list[Webhook]


class RotatedSecret(msgspec.Struct, kw_only=True):
    id: str
    secret: str
    generation: int
    previous_valid_until: datetime | None
    seq: Seq = UNSET


class DeliveryAttempt(msgspec.Struct, kw_only=True):
    attempt: int
    endpoint_id: str
    outcome: str
    status_code: int | None
    latency_ms: float
    error: str | None
    next_attempt_at: datetime | None
    attempted_at: datetime


class Delivery(msgspec.Struct, kw_only=True):
    id: str
    endpoint_id: str
    owner: str
    message_id: str
    event_type: str
    source_seq: int
    source_id: str
    resource_id: str
    url: str
    status: str  # queued | retrying | succeeded | failed
    attempts: list[DeliveryAttempt]
    next_attempt_at: datetime | None
    horizon_from: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class DeliveryList(msgspec.Struct, kw_only=True):
    items: list[Delivery]


class SigningSecret(msgspec.Struct, kw_only=True):
    secret: str

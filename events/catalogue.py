"""The event catalogue: every fact ClinAI records, as frozen msgspec Structs in one tagged union.

Events are immutable. A schema change adds a new type or an optional field (with a
default), so every event ever written still decodes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Final, Literal

import msgspec

from events.inputs import InputFile, InputSchema

__all__ = [
    "JOB_STATUSES",
    "TERMINAL_JOB_EVENTS",
    "TERMINAL_JOB_STATUSES",
    "TERMINAL_VERSION_STATUSES",
    "AnyEvent",
    "ApiKeyIssued",
    "ApiKeyRevoked",
    "BlobRef",
    "BuildFailed",
    "BuildLogAppended",
    "BuildStarted",
    "Event",
    "JobAborted",
    "JobCancelRequested",
    "JobCanceled",
    "JobFailed",
    "JobRequested",
    "JobStarted",
    "JobStatus",
    "JobSucceeded",
    "JobTimings",
    "JobWebhook",
    "ModelCreated",
    "ModelDeleted",
    "ModelNameClaimed",
    "ModelNameReleased",
    "ModelUpdated",
    "ModelVersionAdded",
    "OutputFile",
    "UserCreated",
    "UserInvited",
    "UserLimitsSet",
    "UserPasswordSet",
    "VersionBuilt",
    "VersionUploaded",
    "WebhookCreated",
    "WebhookDeleted",
    "WebhookDeliveryAttempted",
    "WebhookDeliveryQueued",
    "WebhookDisabled",
    "WebhookEnabled",
    "WebhookRedeliveryRequested",
    "WebhookSecretRotated",
    "WebhookUpdated",
]

Visibility = Literal["private", "public"]
FailureKind = Literal[
    "model_error",
    "timeout",
    "setup_timeout",
    "out_of_memory",
    "crashed",
    "canceled",
    "infrastructure",
    "output_limit",
    "input_unavailable",
]
# The statuses a job or a version never leaves, as the write side's folds and the
# projections both derive them from the events.
TERMINAL_JOB_STATUSES: Final = frozenset({"succeeded", "failed", "canceled", "aborted"})
TERMINAL_VERSION_STATUSES: Final = frozenset({"ready", "failed"})
JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled", "aborted"]
JOB_STATUSES: Final = frozenset({"queued", "running"}) | TERMINAL_JOB_STATUSES


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """The envelope every event carries; `type` is the tag (the class name)."""

    aggregate: ClassVar[str]

    id: str
    aggregate_id: str
    occurred_at: datetime
    actor: str
    correlation_id: str
    causation_id: str | None = None
    schema_version: int = 1

    @property
    def type(self) -> str:
        return type(self).__name__


# --- users and api keys -------------------------------------------------------------


class UserCreated(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "user"
    name: str
    is_admin: bool = False
    email: str | None = None  # as given; people sign in with it or the name (any case)


class UserLimitsSet(Event, frozen=True, kw_only=True):
    """An admin's per-user limits, replacing any earlier ones; None: the operator's
    default (settings `max_queued_jobs_per_owner`, `max_running_jobs_per_owner`)."""

    aggregate: ClassVar[str] = "user"
    max_queued_jobs: int | None = None
    max_running_jobs: int | None = None


class UserPasswordSet(Event, frozen=True, kw_only=True):
    """The user's password, set by them, an admin, or through an invitation: only its
    Argon2 hash is recorded (never the password). `invitation_hash` names the invitation
    it used (which then cannot be used again)."""

    aggregate: ClassVar[str] = "user"
    password_hash: str
    invitation_hash: str | None = None


class UserInvited(Event, frozen=True, kw_only=True):
    """An admin's invitation to set the user's password: only the SHA-256 of the link's
    token is recorded; the link works once, until `expires_at`."""

    aggregate: ClassVar[str] = "user"
    token_hash: str
    expires_at: datetime


class ApiKeyIssued(Event, frozen=True, kw_only=True):
    """Only the key's SHA-256 is recorded; the secret is shown once to the caller."""

    aggregate: ClassVar[str] = "apikey"
    user_id: str
    name: str
    key_hash: str
    prefix: str
    is_admin: bool = False


class ApiKeyRevoked(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "apikey"


# --- models ---------------------------------------------------------------------------


class ModelNameClaimed(Event, frozen=True, kw_only=True):
    """Makes a model name unique per owner in the log itself (appended with expected seq)."""

    aggregate: ClassVar[str] = "modelname"
    owner: str
    name: str
    model_id: str


class ModelNameReleased(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "modelname"
    owner: str
    name: str
    model_id: str


class ModelCreated(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "model"
    owner: str
    name: str
    description: str = ""
    visibility: Visibility = "private"
    # Set under an Idempotency-Key: the digest of the request (see `events.idempotency`).
    request_digest: str | None = None


class ModelUpdated(Event, frozen=True, kw_only=True):
    """Only the fields that changed are set."""

    aggregate: ClassVar[str] = "model"
    name: str | None = None
    description: str | None = None
    visibility: Visibility | None = None


class ModelDeleted(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "model"


class ModelVersionAdded(Event, frozen=True, kw_only=True):
    """Allocates the next version number on the model aggregate."""

    aggregate: ClassVar[str] = "model"
    version_id: str
    number: int


# --- versions and builds ---------------------------------------------------------------


class VersionUploaded(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "version"
    model_id: str
    owner: str
    number: int
    package_key: str
    package_hash: str
    requirements_hash: str
    size_bytes: int
    filename: str = "package.zip"
    has_setup: bool = False
    # Set: `run` takes typed inputs (read from predict.py); None: run(input_path, output_dir).
    input_schema: InputSchema | None = None
    # Set under an Idempotency-Key: the digest of the request (see `events.idempotency`).
    request_digest: str | None = None


class BuildStarted(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "version"
    runtime: str
    attempt: int = 1


class BuildLogAppended(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "version"
    index: int
    text: str


class VersionBuilt(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "version"
    runtime: str
    artifact: str
    duration_s: float
    log_key: str | None = None
    reused_from: str | None = None  # the version whose artifact was reused
    artifact_details: dict[str, str] = {}


class BuildFailed(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "version"
    reason: str
    log_tail: str = ""
    log_key: str | None = None
    duration_s: float = 0.0


# --- jobs -----------------------------------------------------------------------------------


class JobWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """A per-job webhook, as Replicate's API has: events from start, output, completed."""

    url: str
    events: tuple[str, ...] = ("completed",)


class OutputFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    key: str
    size_bytes: int
    content_type: str = "application/octet-stream"


class BlobRef(msgspec.Struct, frozen=True, kw_only=True):
    """A claim check: a payload too large for an event, stored in the blob store under
    `key`; `size_bytes` and `sha256` are of the stored bytes."""

    key: str
    size_bytes: int
    sha256: str


class JobTimings(msgspec.Struct, frozen=True, kw_only=True):
    queued_s: float = 0.0
    setup_s: float = 0.0
    run_s: float = 0.0


class JobRequested(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "job"
    owner: str
    model_id: str
    version_id: str
    input_key: str
    input_filename: str
    input_size_bytes: int = 0
    params: dict[str, Any] = {}
    timeout_s: float = 60.0
    webhook: JobWebhook | None = None
    # Set: the executor fetches the input from this URL (`input_key` is then empty).
    input_url: str | None = None
    # Set for a typed version: every input resolved (defaults applied), a file as its
    # name in the job's input folder, from `input_files` (`input_key` is then empty).
    inputs: dict[str, Any] | None = None
    input_files: tuple[InputFile, ...] = ()
    # Set: the job is aborted if still queued then, canceled if running (`JobAborted`).
    deadline: datetime | None = None
    # Set under an Idempotency-Key: the digest of the request (see `events.idempotency`).
    request_digest: str | None = None


class JobStarted(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "job"
    worker: str = ""
    attempt: int = 1


class JobSucceeded(Event, frozen=True, kw_only=True):
    """A large result or outputs list is not in the event: `result_blob` /
    `outputs_blob` hold its claim check (JSON in the blob store), and `result` /
    `outputs` are then empty. Events written before these fields decode with None."""

    aggregate: ClassVar[str] = "job"
    outputs: tuple[OutputFile, ...] = ()
    result: dict[str, Any] = {}
    timings: JobTimings = JobTimings()
    log_key: str | None = None
    result_blob: BlobRef | None = None
    outputs_blob: BlobRef | None = None


class JobFailed(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "job"
    kind: FailureKind
    message: str
    traceback: str | None = None
    timings: JobTimings = JobTimings()
    log_key: str | None = None
    attempts: int = 1


class JobCancelRequested(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "job"


class JobCanceled(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "job"
    message: str = "canceled on request"


AbortReason = Literal["deadline"]


class JobAborted(Event, frozen=True, kw_only=True):
    """The job ended before it ever started: its `JobRequested.deadline` passed while
    it was queued. (A job past its deadline while running ends `JobCanceled`.)"""

    aggregate: ClassVar[str] = "job"
    reason: AbortReason = "deadline"
    message: str = "its deadline passed before it started"


# The events that end a job: exactly one per job (each appended with the job's expected
# sequence).
TERMINAL_JOB_EVENTS: Final = (JobSucceeded, JobFailed, JobCanceled, JobAborted)


# --- webhooks ------------------------------------------------------------------------------
# A subscription is a `webhook` aggregate. Its signing secret is never recorded: it is
# derived from a server key, the webhook id and `generation` (see services.domain.signing).


class WebhookCreated(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "webhook"
    owner: str
    url: str
    events: tuple[str, ...]  # webhook types or globs: "job.*", "version.built"
    description: str = ""
    generation: int = 1
    # Set under an Idempotency-Key: the digest of the request (see `events.idempotency`).
    request_digest: str | None = None


class WebhookUpdated(Event, frozen=True, kw_only=True):
    """Only the fields that changed are set."""

    aggregate: ClassVar[str] = "webhook"
    url: str | None = None
    events: tuple[str, ...] | None = None
    description: str | None = None


class WebhookSecretRotated(Event, frozen=True, kw_only=True):
    """A new secret generation; the previous one stays valid until `previous_valid_until`."""

    aggregate: ClassVar[str] = "webhook"
    generation: int
    previous_valid_until: datetime


class WebhookDisabled(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "webhook"
    reason: str
    consecutive_failures: int = 0


class WebhookEnabled(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "webhook"


class WebhookDeleted(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "webhook"


# A delivery (one event to one endpoint) is a `delivery` aggregate: queued once, then
# one event per attempt. `endpoint_id` is a webhook id, or `jwh_<job id>` for a job's
# own webhook URL.

DeliveryOutcome = Literal["succeeded", "retrying", "failed"]


class WebhookDeliveryQueued(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "delivery"
    endpoint_id: str
    owner: str
    message_id: str  # the `webhook-id` header: the same for every attempt
    event_type: str  # the webhook type, e.g. "job.succeeded"
    source_seq: int
    source_id: str
    resource_id: str
    url: str


class WebhookDeliveryAttempted(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "delivery"
    endpoint_id: str
    attempt: int
    outcome: DeliveryOutcome
    status_code: int | None = None
    latency_ms: float = 0.0
    error: str | None = None
    next_attempt_at: datetime | None = None


class WebhookRedeliveryRequested(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "delivery"
    endpoint_id: str


AnyEvent = (
    UserCreated
    | UserLimitsSet
    | UserPasswordSet
    | UserInvited
    | ApiKeyIssued
    | ApiKeyRevoked
    | ModelNameClaimed
    | ModelNameReleased
    | ModelCreated
    | ModelUpdated
    | ModelDeleted
    | ModelVersionAdded
    | VersionUploaded
    | BuildStarted
    | BuildLogAppended
    | VersionBuilt
    | BuildFailed
    | JobRequested
    | JobStarted
    | JobSucceeded
    | JobFailed
    | JobCancelRequested
    | JobCanceled
    | JobAborted
    | WebhookCreated
    | WebhookUpdated
    | WebhookSecretRotated
    | WebhookDisabled
    | WebhookEnabled
    | WebhookDeleted
    | WebhookDeliveryQueued
    | WebhookDeliveryAttempted
    | WebhookRedeliveryRequested
)

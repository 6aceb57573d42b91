"""The event catalogue: every fact ClinAI records, as frozen msgspec Structs in one tagged union.

Events are immutable. A schema change adds a new type or an optional field (with a
default), so every event ever written still decodes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

import msgspec

__all__ = [
    "AnyEvent",
    "ApiKeyIssued",
    "ApiKeyRevoked",
    "BuildFailed",
    "BuildLogAppended",
    "BuildStarted",
    "Event",
    "JobCancelRequested",
    "JobCanceled",
    "JobFailed",
    "JobRequested",
    "JobStarted",
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
    "VersionBuilt",
    "VersionUploaded",
]

Visibility = Literal["private", "public"]
FailureKind = Literal[
    "model_error", "timeout", "out_of_memory", "crashed", "canceled", "infrastructure"
]


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


class JobStarted(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "job"
    worker: str = ""
    attempt: int = 1


class JobSucceeded(Event, frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "job"
    outputs: tuple[OutputFile, ...] = ()
    result: dict[str, Any] = {}
    timings: JobTimings = JobTimings()
    log_key: str | None = None


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


AnyEvent = (
    UserCreated
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
)

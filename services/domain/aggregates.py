"""Aggregate state folded from an aggregate's own events in the log.

Writers (API commands, builder, executor) decide from these, never from projections,
and append with the `last_seq` they decided from.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from events import (
    TERMINAL_JOB_STATUSES,
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
    UserInvited,
    UserLimitsSet,
    UserPasswordSet,
    VersionBuilt,
    VersionUploaded,
)

__all__ = [
    "TERMINAL_JOB_STATUSES",
    "ApiKeyState",
    "JobState",
    "ModelState",
    "NameClaimState",
    "UserState",
    "VersionState",
    "fold_api_key",
    "fold_job",
    "fold_model",
    "fold_name_claim",
    "fold_user",
    "fold_version",
]


class ModelState(msgspec.Struct, kw_only=True):
    model_id: str
    owner: str
    name: str
    visibility: str
    deleted: bool = False
    latest_version: int = 0
    last_seq: int = 0


class NameClaimState(msgspec.Struct, kw_only=True):
    model_id: str | None  # None when released
    last_seq: int


class VersionState(msgspec.Struct, kw_only=True):
    uploaded: VersionUploaded
    status: str = "uploaded"  # uploaded | building | ready | failed
    build_attempt: int = 0
    log_chunks: int = 0
    built: VersionBuilt | None = None
    last_seq: int = 0


class JobState(msgspec.Struct, kw_only=True):
    requested: JobRequested
    status: str = "queued"  # queued | running | succeeded | failed | canceled | aborted
    attempt: int = 0
    cancel_requested: bool = False
    last_seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES

    def past_deadline(self, now: datetime) -> bool:
        """Whether the job's deadline (if it has one) has passed at `now`: then a queued
        job is aborted and a running one canceled."""
        deadline = self.requested.deadline
        return deadline is not None and now >= deadline


class ApiKeyState(msgspec.Struct, kw_only=True):
    issued: ApiKeyIssued
    revoked: bool = False
    last_seq: int = 0


def fold_model(events: Sequence[StoredEvent]) -> ModelState | None:
    state: ModelState | None = None
    for stored in events:
        match stored.event:
            case ModelCreated() as e:
                state = ModelState(
                    model_id=e.aggregate_id, owner=e.owner, name=e.name, visibility=e.visibility
                )
            case ModelUpdated() as e if state is not None:
                state.name = e.name if e.name is not None else state.name
                state.visibility = e.visibility if e.visibility is not None else state.visibility
            case ModelDeleted() if state is not None:
                state.deleted = True
            case ModelVersionAdded() as e if state is not None:
                state.latest_version = max(state.latest_version, e.number)
        if state is not None:
            state.last_seq = stored.seq
    return state


def fold_name_claim(events: Sequence[StoredEvent]) -> NameClaimState:
    state = NameClaimState(model_id=None, last_seq=0)
    for stored in events:
        match stored.event:
            case ModelNameClaimed() as e:
                state.model_id = e.model_id
            case ModelNameReleased():
                state.model_id = None
        state.last_seq = stored.seq
    return state


def fold_version(events: Sequence[StoredEvent]) -> VersionState | None:
    state: VersionState | None = None
    for stored in events:
        match stored.event:
            case VersionUploaded() as e:
                state = VersionState(uploaded=e)
            case BuildStarted() as e if state is not None:
                state.status = "building"
                state.build_attempt = e.attempt
            case BuildLogAppended() if state is not None:
                state.log_chunks += 1
            case VersionBuilt() as e if state is not None:
                state.status = "ready"
                state.built = e
            case BuildFailed() if state is not None:
                state.status = "failed"
        if state is not None:
            state.last_seq = stored.seq
    return state


def fold_job(events: Sequence[StoredEvent]) -> JobState | None:
    state: JobState | None = None
    for stored in events:
        match stored.event:
            case JobRequested() as e:
                state = JobState(requested=e)
            case JobStarted() as e if state is not None and not state.terminal:
                state.status = "running"
                state.attempt = e.attempt
            case JobSucceeded() if state is not None and not state.terminal:
                state.status = "succeeded"
            case JobFailed() as e if state is not None and not state.terminal:
                state.status = "canceled" if e.kind == "canceled" else "failed"
            case JobCancelRequested() if state is not None:
                state.cancel_requested = True
            case JobCanceled() if state is not None and not state.terminal:
                state.status = "canceled"
            case JobAborted() if state is not None and not state.terminal:
                state.status = "aborted"
        if state is not None:
            state.last_seq = stored.seq
    return state


def fold_api_key(events: Sequence[StoredEvent]) -> ApiKeyState | None:
    state: ApiKeyState | None = None
    for stored in events:
        match stored.event:
            case ApiKeyIssued() as e:
                state = ApiKeyState(issued=e)
            case ApiKeyRevoked() if state is not None:
                state.revoked = True
        if state is not None:
            state.last_seq = stored.seq
    return state


class UserState(msgspec.Struct, kw_only=True):
    """A user, for the commands on them: whether they exist, the limits an admin set
    last, and their invitations (token hash -> expiry) and which of those were used."""

    exists: bool = False
    limits_set: UserLimitsSet | None = None
    invitations: dict[str, datetime] = msgspec.field(default_factory=dict)
    used: set[str] = msgspec.field(default_factory=set)
    last_seq: int = 0


def fold_user(events: Sequence[StoredEvent]) -> UserState:
    state = UserState()
    for stored in events:
        match stored.event:
            case UserCreated():
                state.exists = True
            case UserLimitsSet() as e:
                state.limits_set = e
            case UserInvited() as e:
                state.invitations[e.token_hash] = e.expires_at
            case UserPasswordSet(invitation_hash=str() as used):
                state.used.add(used)
        state.last_seq = stored.seq
    return state

"""Who may see and change what: the one place for these rules. The commands apply them
to the aggregates they fold from the log, the API to the read models it answers from,
the event stream to each event it would send. Each rule is a pure function of owners
and the caller (`user_id`, `is_admin`), so every caller asks the same question.

- A model is readable (and runnable) by its owner, an admin, or anyone if public; a
  version is readable when its model is; changing a model is for its owner or an admin.
- A user's settings (limits) are theirs and an admin's.
- Jobs (with their result, outputs, log and events), webhooks (with their deliveries)
  and API keys are private: their owner's and an admin's only. A direct upload is its
  owner's alone.
- Of the event stream, a caller sees the events of the aggregates they own; an admin
  sees all.
"""

from __future__ import annotations

from events import (
    AnyEvent,
    ApiKeyIssued,
    JobRequested,
    ModelCreated,
    ModelNameClaimed,
    ModelNameReleased,
    UserCreated,
    VersionUploaded,
    WebhookCreated,
    WebhookDeliveryQueued,
)

__all__ = [
    "can_change_model",
    "can_issue_key",
    "can_read_model",
    "can_see_api_key",
    "can_see_event",
    "can_see_job",
    "can_see_user",
    "can_see_webhook",
    "can_use_upload",
    "event_owner",
    "listed_owner",
]


def _own_or_admin(owner: str | None, user_id: str, is_admin: bool) -> bool:
    return is_admin or (owner is not None and owner == user_id)


def can_read_model(owner: str, visibility: str, user_id: str, is_admin: bool) -> bool:
    """A model is readable (and runnable) by its owner, an admin, or anyone if public.
    Its versions are readable when it is."""
    return _own_or_admin(owner, user_id, is_admin) or visibility == "public"


def can_change_model(owner: str, user_id: str, is_admin: bool) -> bool:
    """Changing a model (rename, visibility, delete, new versions) is for its owner or
    an admin, public or not."""
    return _own_or_admin(owner, user_id, is_admin)


def can_see_job(owner: str, user_id: str, is_admin: bool) -> bool:
    """A job, with its result, outputs, log and events, and cancelling it: the owner's
    (who requested it) and an admin's, whoever owns the model it ran."""
    return _own_or_admin(owner, user_id, is_admin)


def can_see_user(user: str, user_id: str, is_admin: bool) -> bool:
    """A user's own settings (their limits): theirs and an admin's."""
    return _own_or_admin(user, user_id, is_admin)


def can_see_webhook(owner: str, user_id: str, is_admin: bool) -> bool:
    """A webhook subscription and its deliveries (and every change to them)."""
    return _own_or_admin(owner, user_id, is_admin)


def can_use_upload(owner: str, user_id: str) -> bool:
    """A direct upload feeds a job of its owner's only: not even an admin's."""
    return owner == user_id


def can_see_api_key(owner: str, user_id: str, is_admin: bool) -> bool:
    """An API key (to list or revoke it); `owner` is the user it was issued for."""
    return _own_or_admin(owner, user_id, is_admin)


def can_issue_key(for_user: str, admin_key: bool, user_id: str, is_admin: bool) -> str | None:
    """Why the caller may not issue a key for `for_user` (an admin key if `admin_key`),
    or None when they may."""
    if not _own_or_admin(for_user, user_id, is_admin):
        return "you can only issue keys for yourself"
    if admin_key and not is_admin:
        return "only an admin can issue admin keys"
    return None


def listed_owner(user_id: str, is_admin: bool, everyone: bool) -> str | None:
    """Whose resources a list shows: the caller's own, or everyone's (None) when an
    admin asks for all (`?all=true`)."""
    return None if is_admin and everyone else user_id


def event_owner(event: AnyEvent) -> str | None:
    """The owner of the event's aggregate when the event itself says (the events that
    create an aggregate, and a few more); None when it must be looked up."""
    match event:
        case (
            JobRequested()
            | VersionUploaded()
            | ModelCreated()
            | ModelNameClaimed()
            | ModelNameReleased()
            | WebhookCreated()
            | WebhookDeliveryQueued()
        ):
            return event.owner
        case ApiKeyIssued():
            return event.user_id
        case UserCreated():
            return event.aggregate_id
    return None


def can_see_event(owner: str | None, user_id: str, is_admin: bool) -> bool:
    """An event of the stream (`GET /v1/events`), given its aggregate's owner (None: no
    owner known, e.g. the aggregate is gone from the read models): an admin sees every
    event, anyone else the events of what they own."""
    return _own_or_admin(owner, user_id, is_admin)

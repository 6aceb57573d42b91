"""The access rules of services/domain/access.py, as pure functions: no server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from events import (
    AnyEvent,
    ApiKeyIssued,
    JobRequested,
    JobStarted,
    ModelCreated,
    UserCreated,
    WebhookCreated,
)
from services.domain.access import (
    can_change_model,
    can_issue_key,
    can_read_model,
    can_see_api_key,
    can_see_event,
    can_see_job,
    can_see_user,
    can_see_webhook,
    event_owner,
    listed_owner,
)

_PRIVATE_RULES: list[Callable[[str, str, bool], bool]] = [
    can_change_model,
    can_see_job,
    can_see_webhook,
    can_see_api_key,
    can_see_user,
]
_ENVELOPE: dict[str, Any] = {
    "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
    "actor": "usr_a",
    "correlation_id": "c",
    "causation_id": None,
}


@pytest.mark.parametrize("rule", _PRIVATE_RULES, ids=lambda rule: rule.__name__)
def test_owned_resources_are_their_owners_and_admins_only(
    rule: Callable[[str, str, bool], bool],
) -> None:
    assert rule("usr_a", "usr_a", False)
    assert not rule("usr_a", "usr_b", False)
    assert rule("usr_a", "usr_b", True)


def test_a_model_is_read_by_its_owner_an_admin_or_anyone_when_public() -> None:
    assert can_read_model("usr_a", "private", "usr_a", False)
    assert not can_read_model("usr_a", "private", "usr_b", False)
    assert can_read_model("usr_a", "private", "usr_b", True)
    assert can_read_model("usr_a", "public", "usr_b", False)


def test_a_public_model_is_changed_by_its_owner_or_an_admin_only() -> None:
    assert not can_change_model("usr_a", "usr_b", False)
    assert can_read_model("usr_a", "public", "usr_b", False)  # runnable, not changeable
    assert can_change_model("usr_a", "usr_b", True)


def test_keys_are_issued_for_oneself_and_admin_keys_by_admins() -> None:
    assert can_issue_key("usr_a", False, "usr_a", False) is None
    assert can_issue_key("usr_b", False, "usr_a", False) == "you can only issue keys for yourself"
    assert can_issue_key("usr_a", True, "usr_a", False) == "only an admin can issue admin keys"
    assert can_issue_key("usr_b", True, "usr_a", True) is None


def test_only_an_admin_lists_everyones_resources() -> None:
    assert listed_owner("usr_a", False, everyone=True) == "usr_a"
    assert listed_owner("usr_a", True, everyone=False) == "usr_a"
    assert listed_owner("usr_a", True, everyone=True) is None


_JOB = {"model_id": "mdl_1", "version_id": "ver_1", "input_key": "k", "input_filename": "x"}
_KEY = {"user_id": "usr_a", "name": "k", "key_hash": "h", "prefix": "p"}
_EVENTS: list[tuple[type[Any], str, dict[str, Any], str | None]] = [
    (JobRequested, "job_1", {"owner": "usr_a", **_JOB}, "usr_a"),
    (ModelCreated, "mdl_1", {"owner": "usr_a", "name": "m"}, "usr_a"),
    (
        WebhookCreated,
        "whk_1",
        {"owner": "usr_a", "url": "https://x.test", "events": ("*",)},
        "usr_a",
    ),
    (ApiKeyIssued, "key_1", _KEY, "usr_a"),
    (UserCreated, "usr_a", {"name": "a"}, "usr_a"),
    (JobStarted, "job_1", {"attempt": 1}, None),
]


@pytest.mark.parametrize(
    ("kind", "aggregate_id", "fields", "owner"), _EVENTS, ids=[e[0].__name__ for e in _EVENTS]
)
def test_an_event_names_its_owner_when_it_creates_the_aggregate(
    kind: type[Any], aggregate_id: str, fields: dict[str, Any], owner: str | None
) -> None:
    event: AnyEvent = kind(id="evt_1", aggregate_id=aggregate_id, **_ENVELOPE, **fields)
    assert event_owner(event) == owner


def test_an_event_without_a_known_owner_is_an_admins_only() -> None:
    assert can_see_event("usr_a", "usr_a", False)
    assert not can_see_event("usr_a", "usr_b", False)
    assert not can_see_event(None, "usr_b", False)
    assert can_see_event(None, "usr_b", True)

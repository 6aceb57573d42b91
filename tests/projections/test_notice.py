"""Commit notices: what a projection commit tells the long polls and the notifier."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from events import (
    JobStarted,
    JobSucceeded,
    ModelDeleted,
    StoredEvent,
    UserCreated,
    WebhookDisabled,
    new_event_id,
)
from projections.notice import Commit, commit_notice, parse_notice


def _base(aggregate_id: str) -> dict[str, Any]:
    return {
        "id": new_event_id(),
        "aggregate_id": aggregate_id,
        "occurred_at": datetime.now(UTC),
        "actor": "t",
        "correlation_id": "c",
    }


def _started(seq: int, job_id: str) -> StoredEvent:
    return StoredEvent(seq, JobStarted(**_base(job_id)))


def test_a_notice_lists_each_changed_job_at_its_last_seq() -> None:
    user = UserCreated(**_base("usr_1"), name="u")
    events = [_started(11, "job_a"), StoredEvent(12, user), _started(13, "job_a")]
    assert parse_notice(commit_notice(10, events)) == Commit(13, 10, {"job_a": 13})
    assert parse_notice(commit_notice(10, events[1:2])) == Commit(12, 10, {})


def test_a_notice_says_when_a_model_or_a_webhook_changed() -> None:
    hook = WebhookDisabled(**_base("whk_1"), reason="failing")
    events = [_started(5, "job_a"), StoredEvent(6, hook)]
    assert parse_notice(commit_notice(4, events)) == Commit(
        6, 4, {"job_a": 5}, changed=frozenset({"webhook"})
    )
    assert not parse_notice(commit_notice(4, events[:1])).changed
    deleted = StoredEvent(7, ModelDeleted(**_base("mdl_1")))
    assert parse_notice(commit_notice(4, [*events, deleted])).changed == {"model", "webhook"}
    assert parse_notice(commit_notice(6, [deleted])).changed == {"model"}


def test_a_notice_says_which_jobs_ended() -> None:
    done = JobSucceeded(**_base("job_b"))
    events = [_started(7, "job_a"), _started(8, "job_b"), StoredEvent(9, done)]
    commit = parse_notice(commit_notice(6, events))
    assert commit == Commit(9, 6, {"job_a": 7, "job_b": 9}, ended=frozenset({"job_b"}))


def test_too_many_jobs_for_a_payload_says_only_the_checkpoint() -> None:
    events = [_started(n, f"job_{n:030d}") for n in range(1, 400)]
    assert commit_notice(0, events) == "399"
    assert parse_notice("399") == Commit(399)

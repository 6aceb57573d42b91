"""Commit notices: what a projection commit tells the long polls and the notifier."""

from __future__ import annotations

from events import (
    JobStarted,
    JobSucceeded,
    ModelDeleted,
    StoredEvent,
    UserCreated,
    WebhookDisabled,
)
from projections.notice import Commit, commit_notice, parse_notice
from tests._events import new_event


def _started(seq: int, job_id: str) -> StoredEvent:
    return StoredEvent(seq, new_event(JobStarted, job_id))


def test_a_notice_lists_each_changed_job_at_its_last_seq() -> None:
    user = new_event(UserCreated, "usr_1", name="u")
    events = [_started(11, "job_a"), StoredEvent(12, user), _started(13, "job_a")]
    assert parse_notice(commit_notice(10, events)) == Commit(13, 10, {"job_a": 13})
    assert parse_notice(commit_notice(10, events[1:2])) == Commit(12, 10, {})


def test_a_notice_says_when_a_model_or_a_webhook_changed() -> None:
    hook = new_event(WebhookDisabled, "whk_1", reason="failing")
    events = [_started(5, "job_a"), StoredEvent(6, hook)]
    assert parse_notice(commit_notice(4, events)) == Commit(
        6, 4, {"job_a": 5}, changed=frozenset({"webhook"})
    )
    assert not parse_notice(commit_notice(4, events[:1])).changed
    deleted = StoredEvent(7, new_event(ModelDeleted, "mdl_1"))
    assert parse_notice(commit_notice(4, [*events, deleted])).changed == {"model", "webhook"}
    assert parse_notice(commit_notice(6, [deleted])).changed == {"model"}


def test_a_notice_says_which_jobs_ended() -> None:
    done = new_event(JobSucceeded, "job_b")
    events = [_started(7, "job_a"), _started(8, "job_b"), StoredEvent(9, done)]
    commit = parse_notice(commit_notice(6, events))
    assert commit == Commit(9, 6, {"job_a": 7, "job_b": 9}, ended=frozenset({"job_b"}))


def test_too_many_jobs_for_a_payload_says_only_the_checkpoint() -> None:
    events = [_started(n, f"job_{n:030d}") for n in range(1, 400)]
    assert commit_notice(0, events) == "399"
    assert parse_notice("399") == Commit(399)

"""Commit notices: what a projection commit tells the long polls."""

from __future__ import annotations

from datetime import UTC, datetime

from events import JobStarted, JobSucceeded, StoredEvent, UserCreated, WebhookDisabled, new_event_id
from projections.notice import Commit, commit_notice, parse_notice


def _started(seq: int, job_id: str) -> StoredEvent:
    at = datetime.now(UTC)
    event = JobStarted(
        id=new_event_id(), aggregate_id=job_id, occurred_at=at, actor="t", correlation_id="c"
    )
    return StoredEvent(seq, event)


def test_a_notice_lists_each_changed_job_at_its_last_seq() -> None:
    user = UserCreated(
        id=new_event_id(),
        aggregate_id="usr_1",
        occurred_at=datetime.now(UTC),
        actor="t",
        correlation_id="c",
        name="u",
    )
    events = [_started(11, "job_a"), StoredEvent(12, user), _started(13, "job_a")]
    assert parse_notice(commit_notice(10, events)) == Commit(13, 10, {"job_a": 13})
    assert parse_notice(commit_notice(10, events[1:2])) == Commit(12, 10, {})


def test_a_notice_says_when_a_webhook_changed() -> None:
    hook = WebhookDisabled(
        id=new_event_id(),
        aggregate_id="whk_1",
        occurred_at=datetime.now(UTC),
        actor="t",
        correlation_id="c",
        reason="failing",
    )
    events = [_started(5, "job_a"), StoredEvent(6, hook)]
    assert parse_notice(commit_notice(4, events)) == Commit(6, 4, {"job_a": 5}, webhooks=True)


def test_a_notice_says_which_jobs_ended() -> None:
    at = datetime.now(UTC)
    done = JobSucceeded(
        id=new_event_id(), aggregate_id="job_b", occurred_at=at, actor="t", correlation_id="c"
    )
    events = [_started(7, "job_a"), _started(8, "job_b"), StoredEvent(9, done)]
    commit = parse_notice(commit_notice(6, events))
    assert commit == Commit(9, 6, {"job_a": 7, "job_b": 9}, ended=frozenset({"job_b"}))
    assert not parse_notice(commit_notice(4, events[:1])).webhooks


def test_too_many_jobs_for_a_payload_says_only_the_checkpoint() -> None:
    events = [_started(n, f"job_{n:030d}") for n in range(1, 400)]
    assert commit_notice(0, events) == "399"
    assert parse_notice("399") == Commit(399)

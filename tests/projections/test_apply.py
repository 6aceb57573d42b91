"""The fold's rules, event type by event type, through the real projector."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    BuildFailed,
    BuildLogAppended,
    BuildStarted,
    Event,
    EventStore,
    JobAborted,
    JobCanceled,
    JobCancelRequested,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobTimings,
    ModelCreated,
    ModelDeleted,
    ModelNameClaimed,
    ModelUpdated,
    ModelVersionAdded,
    OutputFile,
    UserCreated,
    VersionBuilt,
    VersionUploaded,
    new_event_id,
)
from projections import Projector, queries
from tests.projections._support import append_all, running, wait_checkpoint

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_ticks = itertools.count(1)


def ev(cls: type[Event], aggregate_id: str, **fields: Any) -> Any:
    return cls(
        id=new_event_id(),
        aggregate_id=aggregate_id,
        occurred_at=T0 + timedelta(seconds=next(_ticks)),
        actor="usr_a",
        correlation_id="c",
        **fields,
    )


def _version(version_id: str, number: int = 1, package_hash: str = "ph") -> Any:
    return ev(
        VersionUploaded,
        version_id,
        model_id="mdl_1",
        owner="usr_a",
        number=number,
        package_key=f"packages/{version_id}.zip",
        package_hash=package_hash,
        requirements_hash="rh",
        size_bytes=123,
    )


def _job(job_id: str, **fields: Any) -> Any:
    return ev(
        JobRequested,
        job_id,
        owner="usr_a",
        model_id="mdl_1",
        version_id="ver_1",
        input_key=f"inputs/{job_id}/a.png",
        input_filename="a.png",
        params={"k": 1},
        **fields,
    )


async def project(database_url: str, store: EventStore, events: list[Any]) -> None:
    last = await append_all(store, events)
    async with running(Projector(database_url, store)):
        await wait_checkpoint(database_url, last)


async def test_users_keys_and_models(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    events = [
        ev(UserCreated, "usr_a", name="Ada", is_admin=True),
        ev(ApiKeyIssued, "key_1", user_id="usr_a", name="k", key_hash="h1", prefix="ck_1"),
        ev(ApiKeyIssued, "key_2", user_id="usr_a", name="k2", key_hash="h2", prefix="ck_2"),
        ev(ApiKeyRevoked, "key_2"),
        ev(ModelNameClaimed, "claim", owner="usr_a", name="m", model_id="mdl_1"),
        ev(ModelCreated, "mdl_1", owner="usr_a", name="m", description="d"),
        ev(ModelUpdated, "mdl_1", description="new", visibility="public"),
        ev(ModelVersionAdded, "mdl_1", version_id="ver_2", number=2),
        ev(ModelVersionAdded, "mdl_1", version_id="ver_1", number=1),
        ev(ModelCreated, "mdl_2", owner="usr_a", name="gone"),
        ev(ModelDeleted, "mdl_2"),
    ]
    await project(database_url, store, events)

    key = await queries.find_api_key_by_hash(db, "h1")
    assert (
        key is not None and key.user_id == "usr_a" and key.user_is_admin and key.revoked_at is None
    )
    revoked = await queries.find_api_key_by_hash(db, "h2")
    assert revoked is not None and revoked.revoked_at == events[3].occurred_at

    model = await queries.get_model(db, "mdl_1")
    assert model is not None
    assert (model.name, model.description, model.visibility) == ("m", "new", "public")
    assert model.latest_version == 2  # max, not the last one added
    assert model.updated_at == events[8].occurred_at
    assert model.last_seq == 9
    deleted = await queries.get_model(db, "mdl_2")
    assert deleted is not None and deleted.deleted_at == events[10].occurred_at
    page = await queries.list_models(db, "usr_b", False)
    assert [m.id for m in page.items] == ["mdl_1"]  # public and not deleted
    assert await queries.checkpoint(db) == len(events)


async def test_versions_and_builds(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    events = [
        _version("ver_1"),
        ev(BuildStarted, "ver_1", runtime="process", attempt=2),
        ev(BuildLogAppended, "ver_1", index=0, text="a\n"),
        ev(BuildLogAppended, "ver_1", index=1, text="b\n"),
        ev(
            VersionBuilt,
            "ver_1",
            runtime="process",
            artifact="venv-1",
            duration_s=1.5,
            artifact_details={"python": "3.11"},
            log_key="logs/ver_1",
        ),
        ev(BuildFailed, "ver_1", reason="late and ignored"),  # ready is terminal
        _version("ver_2", number=2),
        ev(BuildStarted, "ver_2", runtime="process"),
        ev(BuildFailed, "ver_2", reason="pip", log_tail="E", duration_s=2.0),
        ev(BuildStarted, "ver_2", runtime="process", attempt=3),  # failed is terminal
        _version("ver_3", number=3),
    ]
    await project(database_url, store, events)

    ready = await queries.get_version(db, "ver_1")
    assert ready is not None
    assert (ready.status, ready.runtime, ready.artifact, ready.build_attempt) == (
        "ready",
        "process",
        "venv-1",
        2,
    )
    assert ready.artifact_details == {"python": "3.11"}
    assert ready.build_duration_s == 1.5 and ready.built_at == events[4].occurred_at
    assert ready.last_seq == 5 and ready.log_key == "logs/ver_1"
    failed = await queries.get_version(db, "ver_2")
    assert failed is not None
    assert (failed.status, failed.failure_reason, failed.log_tail, failed.build_attempt) == (
        "failed",
        "pip",
        "E",
        1,
    )
    uploaded = await queries.get_version(db, "ver_3")
    assert uploaded is not None and uploaded.status == "uploaded" and uploaded.build_attempt == 0
    assert [v.id for v in await queries.list_versions(db, "mdl_1")] == ["ver_1", "ver_2", "ver_3"]
    log = await queries.build_log(db, "ver_1")
    assert [(c.index, c.text, c.seq) for c in log] == [(0, "a\n", 3), (1, "b\n", 4)]
    assert [c.index for c in await queries.build_log(db, "ver_1", from_index=1)] == [1]
    reuse = await queries.find_ready_artifact(db, "ph", "process")
    assert reuse is not None and reuse.id == "ver_1"
    assert await queries.find_ready_artifact(db, "ph", "docker") is None


async def test_jobs_through_every_state(
    database_url: str, store: EventStore, db: asyncpg.Connection
) -> None:
    timings = JobTimings(queued_s=0.1, run_s=0.5)
    output = OutputFile(name="o.png", key="outputs/job_ok/o.png", size_bytes=3)
    events = [
        _job("job_ok"),
        ev(JobStarted, "job_ok", worker="w", attempt=1),
        ev(JobSucceeded, "job_ok", outputs=(output,), result={"x": 1}, timings=timings),
        ev(JobStarted, "job_ok", worker="w", attempt=2),  # late: stays succeeded
        ev(JobFailed, "job_ok", kind="crashed", message="ignored"),  # terminal stays
        _job("job_bad"),
        ev(JobStarted, "job_bad"),
        ev(JobFailed, "job_bad", kind="timeout", message="slow", traceback="tb", timings=timings),
        _job("job_cancel"),
        ev(JobCancelRequested, "job_cancel"),
        ev(JobCanceled, "job_cancel", message="by user"),
        _job("job_killed"),
        ev(JobStarted, "job_killed"),
        ev(JobFailed, "job_killed", kind="canceled", message="killed"),
        _job("job_late", deadline=T0 + timedelta(minutes=1)),
        ev(JobAborted, "job_late"),
        ev(JobCanceled, "job_late"),  # a second end is ignored
        _job("job_queued"),
    ]
    await project(database_url, store, events)

    ok = await queries.get_job(db, "job_ok")
    assert ok is not None
    assert ok.status == "succeeded" and ok.result == {"x": 1} and ok.attempt == 2
    assert ok.outputs == [
        {
            "name": "o.png",
            "key": "outputs/job_ok/o.png",
            "size_bytes": 3,
            "content_type": "application/octet-stream",
        }
    ]
    assert ok.timings == {"queued_s": 0.1, "setup_s": 0.0, "run_s": 0.5}
    assert ok.started_at == events[1].occurred_at and ok.finished_at == events[2].occurred_at
    assert ok.error_kind is None and ok.last_seq == 4
    bad = await queries.get_job(db, "job_bad")
    assert bad is not None
    assert (bad.status, bad.error_kind, bad.error_message, bad.traceback) == (
        "failed",
        "timeout",
        "slow",
        "tb",
    )
    canceled = await queries.get_job(db, "job_cancel")
    assert canceled is not None
    assert (canceled.status, canceled.cancel_requested, canceled.error_kind) == (
        "canceled",
        True,
        "canceled",
    )
    assert canceled.error_message == "by user" and canceled.started_at is None
    killed = await queries.get_job(db, "job_killed")
    assert killed is not None and killed.status == "canceled" and killed.error_kind == "canceled"
    late = await queries.get_job(db, "job_late")
    assert late is not None
    assert (late.status, late.error_kind, late.deadline) == (
        "aborted",
        "deadline",
        T0 + timedelta(minutes=1),
    )
    assert late.finished_at is not None and late.started_at is None
    assert late.error_message == "its deadline passed before it started"
    queued = await queries.get_job(db, "job_queued")
    assert queued is not None and queued.deadline is None and queued.inputs is None
    assert (queued.status, queued.outputs, queued.params, queued.attempt) == (
        "queued",
        [],
        {"k": 1},
        0,
    )

    page = await queries.list_jobs(db, owner="usr_a", limit=2)
    assert [j.id for j in page.items] == ["job_queued", "job_late"]
    assert page.next_cursor is not None
    rest = await queries.list_jobs(db, owner="usr_a", limit=10, cursor=page.next_cursor)
    assert [j.id for j in rest.items] == ["job_killed", "job_cancel", "job_bad", "job_ok"]
    assert rest.next_cursor is None
    failed = await queries.list_jobs(db, owner=None, status="failed")
    assert [j.id for j in failed.items] == ["job_bad"]
    aborted = await queries.list_jobs(db, owner=None, status="aborted")
    assert [j.id for j in aborted.items] == ["job_late"]
    assert (await queries.list_jobs(db, owner="usr_b")).items == []

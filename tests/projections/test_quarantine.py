"""An event the read models cannot store, or a message that is no event, is quarantined:
recorded (with the checkpoint moving past it), reported and skipped; the projection goes
on. Before, the projector
failed on it at every restart and nothing after it was ever projected.

The bad events are real events appended straight to the stream, as a writer that does
not check its text (an older version, a hand-made append) would: the codec of this
version refuses them (`events.text`)."""

from __future__ import annotations

import logging

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import (
    Event,
    EventStore,
    JobRequested,
    UserCreated,
    event_subject,
    new_event_id,
    new_id,
)
from projections import Projector
from projections.rebuild import rebuild
from services.projector import status_command
from services.settings import Settings
from tests._events import job_requested
from tests.projections._support import append_all, dump, running, user_created, wait_checkpoint


async def _append_unchecked(nc: NATS, event: Event) -> int:
    """Publish `event` as this version's codec would, but without its text check."""
    subject = event_subject(event.aggregate, event.aggregate_id, event.type)
    ack = await nc.jetstream().publish(
        subject, msgspec.json.encode(event), headers={"Nats-Msg-Id": event.id}
    )
    return int(ack.seq)


async def _append_undecodable(nc: NATS, payload: bytes) -> int:
    subject = f"clinai.user.{new_id('usr')}.UserCreated"
    ack = await nc.jetstream().publish(subject, payload, headers={"Nats-Msg-Id": new_event_id()})
    return int(ack.seq)


def _surrogate_user() -> bytes:
    """A UserCreated whose name is a lone surrogate: JSON can say it, no decoder takes it."""
    return msgspec.json.encode(user_created()).replace(b'"name":"u"', b'"name":"\\ud800"')


def _bad_user() -> UserCreated:
    return msgspec.structs.replace(user_created(), name="a\x00b")  # a text column


def _bad_job(owner: str) -> JobRequested:
    return job_requested(  # a jsonb column
        new_id("job"), owner, actor=owner, correlation_id="c", params={"x": "a\x00b"}
    )


async def _quarantine(db: asyncpg.Connection, schema: str) -> list[tuple[object, ...]]:
    rows = await db.fetch(f"SELECT * FROM {schema}.quarantine ORDER BY seq")
    return [tuple(r.values()) for r in rows]


async def test_an_event_postgres_cannot_store_is_quarantined_and_skipped(
    database_url: str,
    nc: NATS,
    store: EventStore,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    nats_url: str,
) -> None:
    good = [user_created() for _ in range(3)]
    await append_all(store, good[:2])
    bad_user = _bad_user()
    bad_user_seq = await _append_unchecked(nc, bad_user)
    bad_job = _bad_job(good[0].aggregate_id)
    bad_job_seq = await _append_unchecked(nc, bad_job)
    garbage_seq = await _append_undecodable(nc, b'{"type": "UserCreated", "nope": 1}')
    last = await append_all(store, good[2:])

    projector = Projector(database_url, store, max_batch=50)
    with caplog.at_level(logging.ERROR, logger="clinai.projector"):
        async with running(projector):
            await wait_checkpoint(database_url, last, timeout=15)
            # It goes on following the log: later events are projected as they come, and
            # a message that is no event is skipped there too.
            surrogate_seq = await _append_undecodable(nc, _surrogate_user())
            later = user_created()
            last = await append_all(store, [later])
            await wait_checkpoint(database_url, last, timeout=15)

    users = {r["id"] for r in await db.fetch("SELECT id FROM users")}
    assert users == {u.aggregate_id for u in [*good, later]}
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    quarantined = await _quarantine(db, "read_model")
    assert [(q[0], q[1], q[2]) for q in quarantined[:2]] == [
        (bad_user_seq, f"clinai.user.{bad_user.aggregate_id}.UserCreated", bad_user.id),
        (bad_job_seq, f"clinai.job.{bad_job.aggregate_id}.JobRequested", bad_job.id),
    ]
    assert all("0x00" in str(q[4]) or "\\u0000" in str(q[4]) for q in quarantined[:2])
    assert [(q[0], q[2], q[3]) for q in quarantined[2:]] == [
        (garbage_seq, None, None),
        (surrogate_seq, None, None),
    ]
    assert all(str(q[4]).startswith("not an event: ") for q in quarantined[2:]), quarantined
    assert projector.quarantined == 4
    reports = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(reports) == 4 and f"seq {bad_user_seq} (UserCreated" in reports[0]

    # A restart does not trip over them again; a rebuild quarantines the same events and
    # makes the same tables.
    live = await dump(db, "read_model")
    async with running(Projector(database_url, store)):
        await wait_checkpoint(database_url, last, timeout=15)
    report = await rebuild(database_url, store, max_batch=2)
    assert (report.checkpoint, report.quarantined) == (last, 4)
    assert await dump(db, "read_model") == live
    assert await _quarantine(db, "read_model") == quarantined

    # The operator's view: `clinai projections status`.
    settings = Settings(nats_url=nats_url, database_url=database_url)
    await status_command(settings)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"read models at sequence {last} of {last} (0 behind); 4 event(s) quarantined"
    assert out[1].startswith(
        f"  seq {bad_user_seq} clinai.user.{bad_user.aggregate_id}.UserCreated: "
    )


async def test_a_rebuild_quarantines_what_the_live_projector_never_saw(
    database_url: str, nc: NATS, store: EventStore, db: asyncpg.Connection
) -> None:
    await append_all(store, [user_created()])
    bad_seq = await _append_unchecked(nc, _bad_user())
    await append_all(store, [user_created() for _ in range(5)])
    garbage_seq = await _append_undecodable(nc, b"not json")
    last = await append_all(store, [user_created()])
    report = await rebuild(database_url, store)
    assert report.checkpoint == last
    assert await db.fetchval("SELECT count(*) FROM users") == 7
    assert [q[0] for q in await _quarantine(db, "read_model")] == [bad_seq, garbage_seq]

"""The event-store client against a real JetStream server."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import (
    ConcurrencyConflictError,
    EventStore,
    EventTooLargeError,
    IdempotencyKeyReusedError,
    JobRequested,
    JobStarted,
    JobSucceeded,
    ModelCreated,
    ModelNameClaimed,
    StreamUnavailableError,
    decode_event,
    encode_event,
    event_id_for_key,
    new_id,
    request_digest_of,
)
from tests._events import new_event


def _model_created(model_id: str, *, event_id: str | None = None) -> ModelCreated:
    return new_event(
        ModelCreated, model_id, correlation_id="corr", event_id=event_id, owner="usr_test", name="m"
    )


def _name_claimed(model_id: str) -> ModelNameClaimed:
    """The claim of one and the same name, for `model_id`."""
    return new_event(
        ModelNameClaimed, "owner-name-hash", owner="usr_test", name="m", model_id=model_id
    )


def _job_started(job_id: str, worker: str) -> JobStarted:
    return new_event(JobStarted, job_id, actor=worker, correlation_id="corr", worker=worker)


async def test_stream_is_created_with_the_architecture_settings(
    nc: NATS, store: EventStore
) -> None:
    info = await nc.jetstream().stream_info("CLINAI")
    assert info.config.subjects == ["clinai.>"]
    assert info.config.deny_delete is True
    assert info.config.deny_purge is True
    # Opening again (a second service starting) leaves it as it is.
    again = await EventStore.open(nc, stream="CLINAI")
    assert await again.stream_last_seq() == 0


async def test_concurrent_writers_exactly_one_wins(store: EventStore) -> None:
    job_id = new_id("job")
    results = await asyncio.gather(
        *(store.append(_job_started(job_id, f"w{n}"), expected=0) for n in range(8)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, int)]
    conflicts = [r for r in results if isinstance(r, ConcurrencyConflictError)]
    assert len(wins) == 1
    assert len(conflicts) == 7
    history = await store.read_aggregate("job", job_id)
    assert [s.seq for s in history.events] == wins
    assert conflicts[0].hint


async def test_idempotent_retry_returns_the_same_sequence(store: EventStore) -> None:
    model_id = new_id("mdl")
    event_id = event_id_for_key("usr_test", "key-1", "ModelCreated")
    first = await store.append(_model_created(model_id, event_id=event_id), expected=0)
    # A retry of the same command (same Idempotency-Key → same event id) is acknowledged once.
    again = await store.append(_model_created(model_id, event_id=event_id), expected=0)
    assert again == first
    history = await store.read_aggregate("model", model_id)
    assert len(history.events) == 1


@pytest.mark.parametrize("expected", [0, None])
async def test_a_key_reused_for_another_request_is_refused(
    store: EventStore, expected: int | None
) -> None:
    """The same event id (one Idempotency-Key) with another request digest: refused
    (the refusal of the expected sequence, or JetStream's duplicate ack, checked against
    the stored event); the same digest is a retry."""
    model_id = new_id("mdl")
    event_id = event_id_for_key("usr_test", "key-2", "ModelCreated")

    def created(digest: str) -> ModelCreated:
        return msgspec.structs.replace(
            _model_created(model_id, event_id=event_id), request_digest=digest
        )

    first = await store.append(created("a"), expected=0)
    assert await store.append(created("a"), expected=expected) == first
    with pytest.raises(IdempotencyKeyReusedError) as refused:
        await store.append(created("b"), expected=expected)
    assert (refused.value.aggregate, refused.value.aggregate_id) == ("model", model_id)
    history = await store.read_aggregate("model", model_id)
    assert [request_digest_of(e.event) for e in history.events] == ["a"]


async def test_retry_after_later_events_still_returns_the_stored_sequence(
    store: EventStore,
) -> None:
    model_id = new_id("mdl")
    created = _model_created(model_id)
    first = await store.append(created, expected=0)
    await store.append(_model_created(model_id), expected=first)
    assert await store.append(created, expected=0) == first


async def test_stale_expected_sequence_is_refused(store: EventStore) -> None:
    model_id = new_id("mdl")
    seq1 = await store.append(_model_created(model_id), expected=0)
    await store.append(_model_created(model_id), expected=seq1)
    with pytest.raises(ConcurrencyConflictError) as info:
        await store.append(_model_created(model_id), expected=seq1)
    assert info.value.expected == seq1
    assert info.value.actual is not None and info.value.actual > seq1


async def test_batch_is_atomic(store: EventStore) -> None:
    model_id = new_id("mdl")
    claim = _name_claimed(model_id)
    created = _model_created(model_id)
    seq = await store.append_batch([(claim, 0), (created, 0)])
    assert seq == await store.stream_last_seq()
    # The second batch conflicts on the claim, so its model event must not be written either.
    other_model = new_id("mdl")
    claim2 = _name_claimed(other_model)
    with pytest.raises(ConcurrencyConflictError):
        await store.append_batch([(claim2, 0), (_model_created(other_model), 0)])
    assert (await store.read_aggregate("model", other_model)).events == []
    # Retrying the first batch as a whole is acknowledged with its stored sequence.
    assert await store.append_batch([(claim, 0), (created, 0)]) == seq


async def test_read_aggregate_pages_past_one_batch(store: EventStore) -> None:
    job_id = new_id("job")
    other = new_id("job")
    expected = 0
    for n in range(1200):
        expected = await store.append(_job_started(job_id, f"w{n}"), expected=expected)
        if n % 100 == 0:
            await store.append(_job_started(other, "x"), expected=None)
    history = await store.read_aggregate("job", job_id)
    assert len(history.events) == 1200
    assert history.last_seq == expected == await store.last_seq("job", job_id)
    assert [s.event.worker for s in history.events] == [f"w{n}" for n in range(1200)]  # type: ignore[union-attr]


async def test_a_read_that_lacks_the_event_it_must_hold_is_not_answered(
    store: EventStore,
) -> None:
    """On a replicated stream any replica answers a read, and a follower may not have
    the latest events: a handler reads the aggregate of the message it handles
    `including` that message, and a history without it is read again, then refused
    (StreamUnavailableError: retried later), never decided from."""
    model_id = new_id("mdl")
    seq = await store.append(_model_created(model_id), expected=0)
    assert (await store.read_aggregate("model", model_id, including=seq)).last_seq == seq
    with pytest.raises(StreamUnavailableError, match=f"without its event {seq + 1}"):
        await store.read_aggregate("model", model_id, including=seq + 1)


async def test_read_from_follows_in_order(store: EventStore) -> None:
    job_id = new_id("job")
    seqs = [await store.append(_job_started(job_id, f"w{n}"), expected=None) for n in range(5)]
    seen: list[int] = []
    reader = store.read_from(seqs[2])

    async def take(n: int) -> None:
        async for stored in reader:
            seen.append(stored.seq)
            if len(seen) == n:
                break

    await asyncio.wait_for(take(3), timeout=5)
    assert seen == seqs[2:]
    await reader.aclose()


def _with_description(model_id: str, total: int) -> ModelCreated:
    """A ModelCreated whose message (headers included, as `append` sends it with an
    expected sequence) is `total` bytes."""
    event = _model_created(model_id)
    headers = (
        len("NATS/1.0\r\n\r\n")
        + len(f"Nats-Msg-Id: {event.id}\r\n")
        + len("Nats-Expected-Last-Subject-Sequence: 0\r\n")
        + len(f"Nats-Expected-Last-Subject-Sequence-Subject: clinai.model.{model_id}.*\r\n")
    )
    filler = total - headers - len(encode_event(event))
    return msgspec.structs.replace(event, description="d" * filler)


async def test_an_event_larger_than_the_server_takes_is_refused_before_sending(
    nc: NATS, store: EventStore
) -> None:
    limit = nc.max_payload
    assert store.max_message_bytes == limit  # from the server's INFO (1 MiB by default)
    # Exactly the limit fits: the guard counts the headers as the server does.
    fits = new_id("mdl")
    seq = await store.append(_with_description(fits, limit), expected=0)
    assert (await store.read_aggregate("model", fits)).last_seq == seq
    # One byte more is a typed error, not nats' MaxPayloadError, and nothing is written.
    too_big = new_id("mdl")
    with pytest.raises(EventTooLargeError) as info:
        await store.append(_with_description(too_big, limit + 1), expected=0)
    assert info.value.size == limit + 1 and info.value.limit == limit
    assert info.value.event_type == "ModelCreated" and "claim check" in info.value.hint
    # In a batch, one oversized event stops the whole batch before any of it is sent.
    small = new_id("mdl")
    with pytest.raises(EventTooLargeError):
        await store.append_batch(
            [(_model_created(small), 0), (_with_description(too_big, 2 * limit), 0)]
        )
    assert await store.stream_last_seq() == seq


def test_old_events_still_decode() -> None:
    # A JobRequested written before optional fields existed decodes with their defaults.
    raw = (
        b'{"type":"JobRequested","id":"e","aggregate_id":"job_x","occurred_at":"2026-01-01T00:00:00Z",'
        b'"actor":"u","correlation_id":"c","owner":"u","model_id":"m","version_id":"v",'
        b'"input_key":"inputs/job_x/a.png","input_filename":"a.png"}'
    )
    event = decode_event(raw)
    assert isinstance(event, JobRequested)
    assert event.timeout_s == 60.0
    assert event.webhook is None
    assert event.deadline is None  # no deadline: never aborted nor canceled for one
    # A JobSucceeded from before results could be claim-checked.
    raw = (
        b'{"type":"JobSucceeded","id":"e","aggregate_id":"job_x","occurred_at":"2026-01-01T00:00:00Z",'
        b'"actor":"u","correlation_id":"c","result":{"a":1}}'
    )
    done = decode_event(raw)
    assert isinstance(done, JobSucceeded)
    assert done.result == {"a": 1} and done.result_blob is None and done.outputs_blob is None

"""A synthetic, realistic mix of events for the projection tests and the benchmark.

Each aggregate's events come as one ordered chain; chains of different aggregates
may be appended concurrently (their relative order does not matter to the fold).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from events import (
    AnyEvent,
    ApiKeyIssued,
    ApiKeyRevoked,
    BuildFailed,
    BuildLogAppended,
    BuildStarted,
    EventStore,
    JobAborted,
    JobCanceled,
    JobCancelRequested,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSucceeded,
    JobTimings,
    JobWebhook,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    ModelVersionAdded,
    OutputFile,
    UserCreated,
    VersionBuilt,
    VersionUploaded,
    WebhookCreated,
    WebhookDeleted,
    WebhookDeliveryAttempted,
    WebhookDeliveryQueued,
    WebhookDisabled,
    WebhookEnabled,
    WebhookRedeliveryRequested,
    WebhookSecretRotated,
    WebhookUpdated,
    new_event_id,
    new_id,
)

__all__ = ["Workload", "append_chains", "append_workload", "make_workload"]

Chain = list[AnyEvent]


class _Clock:
    def __init__(self) -> None:
        self._t = datetime(2026, 1, 1, tzinfo=UTC)
        self._step = itertools.count()

    def now(self) -> datetime:
        return self._t + timedelta(milliseconds=next(self._step))


class Workload:
    """Chains in dependency waves: every chain of wave n may rely on waves < n."""

    def __init__(self) -> None:
        self.waves: list[list[Chain]] = [[], [], []]

    @property
    def count(self) -> int:
        return sum(len(chain) for wave in self.waves for chain in wave)


def make_workload(target_events: int, *, seed: int = 7) -> Workload:
    """Users with keys, models with versions (build logs, built or failed) and jobs
    through every state, until about `target_events` events."""
    rnd = random.Random(seed)
    clock = _Clock()
    work = Workload()
    env = {"actor": "usr_bench", "correlation_id": "corr"}

    def base(aggregate_id: str) -> dict[str, Any]:
        return {
            "id": new_event_id(),
            "aggregate_id": aggregate_id,
            "occurred_at": clock.now(),
            **env,
        }

    while work.count < target_events:
        user = new_id("usr")
        work.waves[0].append([UserCreated(**base(user), name=f"user {user[-4:]}")])
        key = new_id("key")
        key_chain: Chain = [
            ApiKeyIssued(
                **base(key),
                user_id=user,
                name="default",
                key_hash=f"hash-{key}",
                prefix=key[:8],
            )
        ]
        if rnd.random() < 0.3:
            key_chain.append(ApiKeyRevoked(**base(key)))
        work.waves[0].append(key_chain)
        model = new_id("mdl")
        model_chain: Chain = [
            ModelCreated(
                **base(model),
                owner=user,
                name=f"model-{model[-6:]}",
                visibility=rnd.choice(["private", "public"]),
            )
        ]
        if rnd.random() < 0.5:
            model_chain.append(ModelUpdated(**base(model), description="updated"))
        versions = []
        for number in range(1, rnd.randint(1, 3) + 1):
            version = new_id("ver")
            versions.append(version)
            model_chain.append(ModelVersionAdded(**base(model), version_id=version, number=number))
            chain: Chain = [
                VersionUploaded(
                    **base(version),
                    model_id=model,
                    owner=user,
                    number=number,
                    package_key=f"packages/{version}.zip",
                    package_hash=f"ph-{rnd.randint(0, 50)}",
                    requirements_hash="rh",
                    size_bytes=rnd.randint(1000, 10**6),
                ),
                BuildStarted(**base(version), runtime="process"),
            ]
            for index in range(rnd.randint(2, 6)):
                chain.append(
                    BuildLogAppended(**base(version), index=index, text=f"step {index}\n" * 3)
                )
            if rnd.random() < 0.85:
                chain.append(
                    VersionBuilt(
                        **base(version),
                        runtime="process",
                        artifact=f"venv-{version}",
                        duration_s=rnd.random() * 10,
                        artifact_details={"python": "3.11"},
                    )
                )
            else:
                chain.append(BuildFailed(**base(version), reason="pip failed", log_tail="E: x"))
            work.waves[1].append(chain)
        if rnd.random() < 0.1:
            model_chain.append(ModelDeleted(**base(model)))
        work.waves[0].append(model_chain)
        for _ in range(rnd.randint(2, 8)):
            work.waves[2].append(_job_chain(rnd, base, user, model, rnd.choice(versions)))
        if rnd.random() < 0.5:
            _webhook_chains(work, rnd, base, user, clock)
    return work


def _webhook_chains(
    work: Workload,
    rnd: random.Random,
    base: Callable[[str], dict[str, Any]],
    user: str,
    clock: _Clock,
) -> None:
    """A subscription through its lifecycle (wave 0) and deliveries to it (wave 1)."""
    hook = new_id("whk")
    chain: Chain = [
        WebhookCreated(**base(hook), owner=user, url="https://example.test/w", events=("job.*",))
    ]
    if rnd.random() < 0.5:
        chain.append(WebhookUpdated(**base(hook), events=("job.succeeded", "version.*")))
    if rnd.random() < 0.3:
        valid = clock.now() + timedelta(hours=1)
        chain.append(WebhookSecretRotated(**base(hook), generation=2, previous_valid_until=valid))
    if rnd.random() < 0.2:
        chain += [WebhookDisabled(**base(hook), reason="failing"), WebhookEnabled(**base(hook))]
    if rnd.random() < 0.1:
        chain.append(WebhookDeleted(**base(hook)))
    work.waves[0].append(chain)
    for n in range(rnd.randint(1, 3)):
        delivery = new_id("dlv")
        deliveries: Chain = [
            WebhookDeliveryQueued(
                **base(delivery),
                endpoint_id=hook,
                owner=user,
                message_id=f"msg_{delivery}",
                event_type="job.succeeded",
                source_seq=n + 1,
                source_id=new_event_id(),
                resource_id=new_id("job"),
                url="https://example.test/w",
            )
        ]
        attempts = rnd.randint(1, 3)
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            deliveries.append(
                WebhookDeliveryAttempted(
                    **base(delivery),
                    endpoint_id=hook,
                    attempt=attempt,
                    outcome=rnd.choice(["succeeded", "failed"]) if last else "retrying",
                    status_code=rnd.choice([200, 500, None]),
                    latency_ms=rnd.random() * 100,
                    error=None if last else "HTTP 500",
                    next_attempt_at=None if last else clock.now() + timedelta(seconds=5),
                )
            )
        if rnd.random() < 0.2:
            deliveries.append(WebhookRedeliveryRequested(**base(delivery), endpoint_id=hook))
        work.waves[1].append(deliveries)


def _job_chain(
    rnd: random.Random, base: Callable[[str], dict[str, Any]], user: str, model: str, version: str
) -> Chain:
    b = base  # the envelope factory
    job = new_id("job")
    chain: Chain = [
        JobRequested(
            **b(job),
            owner=user,
            model_id=model,
            version_id=version,
            input_key=f"inputs/{job}/in.png",
            input_filename="in.png",
            params={"threshold": rnd.random()},
            webhook=JobWebhook(url="https://example.test/hook") if rnd.random() < 0.2 else None,
            # A typed version's job: its resolved inputs (projected as they are).
            inputs={"image": "image-in.png", "levels": rnd.randint(2, 256)}
            if rnd.random() < 0.3
            else None,
        )
    ]
    roll = rnd.random()
    if roll < 0.025:
        chain += [JobCancelRequested(**b(job)), JobCanceled(**b(job))]
        return chain
    if roll < 0.05:  # queued past its deadline
        requested = chain[0]
        assert isinstance(requested, JobRequested)
        deadline = requested.occurred_at + timedelta(seconds=1)
        chain[0] = msgspec.structs.replace(requested, deadline=deadline)
        chain.append(JobAborted(**b(job)))
        return chain
    chain.append(JobStarted(**b(job), worker="w1"))
    timings = JobTimings(queued_s=0.1, setup_s=0.2, run_s=rnd.random())
    if roll < 0.8:
        chain.append(
            JobSucceeded(
                **b(job),
                outputs=(OutputFile(name="out.png", key=f"outputs/{job}/out.png", size_bytes=10),),
                result={"label": "cat", "score": rnd.random()},
                timings=timings,
                log_key=f"logs/{job}",
            )
        )
    elif roll < 0.95:
        chain.append(
            JobFailed(
                **b(job),
                kind=rnd.choice(["model_error", "timeout", "crashed"]),
                message="boom",
                traceback="Traceback ...",
                timings=timings,
            )
        )
    else:
        chain += [
            JobCancelRequested(**b(job)),
            JobFailed(**b(job), kind="canceled", message="canceled while running"),
        ]
    return chain


async def append_chains(
    store: EventStore, chains: Sequence[Chain], *, concurrency: int = 64
) -> int:
    """Append every chain in order (chains concurrently); return the last sequence."""
    pending = iter(chains)

    async def worker() -> None:
        for chain in pending:
            for event in chain:
                await store.append(event, expected=None)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return await store.stream_last_seq()


async def append_workload(store: EventStore, target_events: int, *, seed: int = 7) -> int:
    """Append `make_workload(target_events, seed=seed)`, wave by wave; return the stream's
    last sequence."""
    for wave in make_workload(target_events, seed=seed).waves:
        await append_chains(store, wave, concurrency=16)
    return await store.stream_last_seq()

"""One fault per test on a cluster on this machine (tests/cluster/_hosts.py), under a
bounded load: no-op jobs from 16 clients over both APIs, a webhook subscription to a
local receiver. In every test every accepted job has exactly one terminal event in the
log, and its webhook is delivered at least once. Each test prints what it measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from tests._infra import wait_until
from tests.api._client import new_user
from tests.cluster._hosts import Cluster
from tests.cluster._load import JobLog, Load, read_jobs
from tests.cluster._stack import (
    ClusterStack,
    delivered_jobs,
    leading_projector,
    projected,
    subscribed,
    succeeded_in_read_models,
    wait_ready,
)
from tests.notifier._receiver import Receiver

pytestmark = pytest.mark.cluster

JOBS = 600
CLIENTS = 16
# How long clients may see 503s after the stream leader is killed: nats-server's Raft
# followers wait 4-9 s for a lost leader before they campaign (minElectionTimeoutDefault,
# maxElectionTimeoutDefault in server/raft.go; not configurable), a campaign takes up to
# 0.8 s, and a command sent just before the new leader is elected still waits out its
# append's timeout (5 s, `EventStore`) before it is answered 503; plus 1 s for the
# answer's way back on a busy machine.
_ELECTION_503_S = 9.0 + 0.8 + 5.0 + 1.0


class Run:
    """What one test's load left: the clients' view and the log's."""

    def __init__(self, load: Load, log: JobLog, fault_at: float, receiver: Receiver) -> None:
        self.load = load
        self.log = log
        self.fault_at = fault_at
        self.receiver = receiver


async def _stream_tail(cluster: Cluster) -> int:
    return (await read_jobs(cluster.nats.url, 1 << 62)).last_seq


async def under_load(
    stack: ClusterStack,
    fault: Callable[[Load], Awaitable[None]],
    *,
    fault_after: int = JOBS // 4,
    jobs: int = JOBS,
) -> Run:
    """Run the load, call `fault` once `fault_after` jobs were accepted, let the load
    finish, then wait for every job in the log to end and every end to be delivered."""
    cluster = stack.cluster
    async with subscribed(stack) as receiver:
        start_seq = await _stream_tail(cluster) + 1
        load = Load(cluster.api_urls, cluster.admin_key, stack.noop_version, jobs=jobs,
                    clients=CLIENTS)  # fmt: skip
        running = asyncio.create_task(load.run())
        await wait_until(
            lambda: len(load.accepted) >= fault_after or running.done(),
            what=f"{fault_after} jobs accepted",
            timeout_s=120,
        )
        fault_at = time.monotonic()
        try:
            await fault(load)
        except BaseException:
            running.cancel()  # no command of this test is left in flight for the next
            await asyncio.gather(running, return_exceptions=True)
            raise
        await running
        log = JobLog()

        async def all_ended() -> bool:
            nonlocal log
            log = await read_jobs(cluster.nats.url, start_seq)
            return not log.unended() and set(load.accepted) <= set(log.requested)

        await wait_until(all_ended, what="every job in the log to end", timeout_s=180, every_s=1)
        try:
            await wait_until(
                lambda: set(load.accepted) <= delivered_jobs(receiver),
                what="a webhook for every accepted job",
                timeout_s=120,
                every_s=0.5,
            )
        except AssertionError as err:
            missing = set(load.accepted) - delivered_jobs(receiver)
            raise AssertionError(
                f"{err}: {len(missing)} of {len(load.accepted)} missing, e.g. "
                f"{sorted(missing)[:3]}; {len(receiver.received)} deliveries received"
            ) from None
        log = await read_jobs(cluster.nats.url, start_seq)  # late doubles would show here
    return Run(load, log, fault_at, receiver)


def check_every_job_ended_once(run: Run, others: frozenset[str] = frozenset()) -> None:
    """`others`: jobs the test submitted besides the load's."""
    load, log = run.load, run.log
    assert not load.unexpected, f"answers other than 202/503: {load.unexpected[:5]}"
    assert len(load.accepted) == load.jobs
    missing = set(load.accepted) - set(log.requested)
    assert not missing, f"accepted jobs missing from the log: {sorted(missing)[:5]}"
    assert not log.doubly_ended(), f"jobs with two terminal events: {log.doubly_ended()}"
    assert not log.unended()
    # An idempotent retry is acknowledged once: one job per command, whatever the tries.
    assert all(len(ids) == 1 for ids in load.ids_by_key.values())
    assert len(set(log.requested) - others) == len(load.ids_by_key)
    failed = {job: ends for job, ends in log.terminal.items() if ends[0][0] != "JobSucceeded"}
    assert not failed, f"jobs that did not succeed: {list(failed.items())[:5]}"


async def check_read_models(stack: ClusterStack, run: Run) -> float:
    """The read models catch up with the log and show every job succeeded; the seconds
    it took from now."""
    cluster = stack.cluster

    async def caught_up() -> bool:
        return await projected(cluster) >= run.log.last_seq

    took = await wait_until(caught_up, what="the read models to catch up", timeout_s=60)
    succeeded = await succeeded_in_read_models(cluster, list(run.log.requested))
    assert succeeded == len(run.log.requested)
    return took


def _describe(run: Run) -> str:
    load = run.load
    took = max(load.accepted_at.values()) - load.started_at
    return (
        f"{len(load.accepted)} jobs accepted in {took:.1f} s, answers {dict(load.statuses())}, "
        f"{load.retried()} commands retried, submit p50 {load.percentile(0.5) * 1000:.0f} ms "
        f"p99 {load.percentile(0.99) * 1000:.0f} ms, {len(run.receiver.received)} webhooks"
    )


async def test_kill_9_of_an_executor_mid_job(stack: ClusterStack, figures: list[str]) -> None:
    """Its jobs re-run once on the other executor within 10 s."""
    cluster = stack.cluster
    doomed, survivor = cluster.of("executor")
    killed_at: list[datetime] = []
    nap_jobs: list[str] = []
    marker = f":{doomed.pid}:"  # in the worker id of its JobStarted events

    async def kill_mid_job(load: Load) -> None:
        # Jobs that take a while, so that the doomed executor surely runs one when killed.
        # Another owner's jobs: they get the next free slots, not a place behind the
        # load's queue (an owner's jobs start in submission order).
        other = await new_user(cluster.api_urls[0], cluster.admin_key, "napper")
        start_seq = await _stream_tail(cluster) + 1

        async def nap() -> None:
            reply = await other.upload(
                "/v1/jobs", "input", "in.txt", b"x", version=stack.nap_version,
                params='{"sleep_s": 3}',
            )  # fmt: skip
            assert reply.status == 202, reply.body
            nap_jobs.append(reply.body["id"])

        for _ in range(8):
            await nap()

        async def doomed_runs_a_nap() -> bool:
            log = await read_jobs(cluster.nats.url, start_seq)
            if any(
                marker in worker and not log.terminal.get(job)
                for job in nap_jobs
                for worker, _, _ in log.started.get(job, [])
            ):
                return True
            # The other executor may have pulled every nap job so far: send another.
            if len(nap_jobs) < 64:
                await nap()
            return False

        await wait_until(doomed_runs_a_nap, what="the doomed executor to run a nap job",
                         timeout_s=60, every_s=0.25)  # fmt: skip
        killed_at.append(datetime.now(UTC))
        doomed.kill()

    try:
        run = await under_load(stack, kill_mid_job)
    finally:
        cluster.heal()
    check_every_job_ended_once(run, frozenset(nap_jobs))
    interrupted = {
        job: starts
        for job, starts in run.log.started.items()
        if any(marker in worker for worker, _, _ in starts) and marker not in starts[-1][0]
    }
    assert interrupted, "no job was running on the killed executor"
    assert set(nap_jobs) & set(interrupted)
    rerun_after: list[float] = []
    for job, starts in interrupted.items():
        assert len(starts) == 2, f"{job} started {len(starts)} times: {starts}"
        worker, attempt, at = starts[1]
        assert f":{survivor.pid}:" in worker and attempt == 2
        rerun_after.append((at - killed_at[0]).total_seconds())
    assert max(rerun_after) < 10.0, f"re-run {max(rerun_after):.1f} s after the kill"
    figures.append(
        f"executor kill -9: {len(interrupted)} interrupted jobs re-run once on the other "
        f"executor, {min(rerun_after):.1f}-{max(rerun_after):.1f} s after the kill; "
        + _describe(run)
    )
    await wait_ready(cluster)


async def test_kill_9_of_the_leading_projector(stack: ClusterStack, figures: list[str]) -> None:
    """The standby takes over; queries are current again within 5 s."""
    cluster = stack.cluster
    current_after: list[float] = []
    took_over: list[str] = []

    async def kill_leader(load: Load) -> None:
        leader = await leading_projector(cluster)
        assert leader is not None, "no projector holds the lock"
        killed = time.monotonic()
        leader.kill()
        tail = await _stream_tail(cluster)  # what the log holds once the leader is gone

        async def standby_leads() -> bool:
            standby = await leading_projector(cluster)
            if standby is None or standby is leader:
                return False
            took_over.append(f"{standby.label} in {time.monotonic() - killed:.2f} s")
            return True

        async def current() -> bool:
            return await projected(cluster) >= tail

        await wait_until(standby_leads, what="the standby to take over", timeout_s=30)
        await wait_until(current, what="the read models to be current again", timeout_s=30)
        current_after.append(time.monotonic() - killed)

    try:
        run = await under_load(stack, kill_leader)
    finally:
        cluster.heal()
    check_every_job_ended_once(run)
    assert current_after[0] < 5.0, f"queries current again {current_after[0]:.1f} s after"
    figures.append(
        f"leading projector kill -9: {took_over[0]} took over, read models current again "
        f"{current_after[0]:.2f} s after the kill; " + _describe(run)
    )
    await wait_ready(cluster)


async def test_kill_9_of_the_nats_node_that_leads_the_stream(
    stack: ClusterStack, figures: list[str]
) -> None:
    """0 accepted jobs lost, 0 jobs with two terminal events; clients see only
    retryable 503s, and only while NATS elects a new leader (`_ELECTION_503_S`)."""
    cluster = stack.cluster
    killed: list[str] = []

    async def kill_leader(load: Load) -> None:
        leader = await cluster.stream_leader()
        killed.append(leader)
        cluster.nats.kill(leader)

    try:
        run = await under_load(stack, kill_leader)
        new_leader = await cluster.stream_leader()
    finally:
        if killed:
            await asyncio.to_thread(cluster.nats.restart, killed[0])
        cluster.heal()
    check_every_job_ended_once(run)
    load = run.load
    assert set(load.statuses()) <= {202, 503}, load.statuses()
    assert all(a.retry_after for a in load.answers if a.status == 503)
    window = load.window(503, since=run.fault_at)
    assert window < _ELECTION_503_S, f"clients saw 503s for {window:.1f} s"
    assert new_leader != killed[0]
    await check_read_models(stack, run)
    figures.append(
        f"stream leader {killed[0]} kill -9: {new_leader} leads; 503s for {window:.2f} s "
        f"({load.statuses()[503]} answers); " + _describe(run)
    )
    await wait_ready(cluster)


async def test_postgres_restarted(stack: ClusterStack, figures: list[str]) -> None:
    """The API answers 503 meanwhile; the read models catch up; nothing is lost."""
    cluster = stack.cluster
    seen: list[float] = []

    async def restart_postgres(load: Load) -> None:
        stopped = time.monotonic()
        await cluster.postgres.stop()

        async def queries_refused() -> bool:
            for api in range(len(cluster.api_urls)):
                reply = await stack.admin(api).get("/v1/jobs?limit=1")
                if reply.status != 503 or "retry-after" not in reply.headers:
                    return False
            return True

        await wait_until(queries_refused, what="503 from every API", timeout_s=15)
        seen.append(time.monotonic() - stopped)
        await cluster.postgres.restart()
        seen.append(time.monotonic() - stopped)

    try:
        run = await under_load(stack, restart_postgres)
    finally:
        cluster.heal()
    check_every_job_ended_once(run)
    assert set(run.load.statuses()) <= {202, 503}, run.load.statuses()
    caught_up = await check_read_models(stack, run)
    figures.append(
        f"Postgres restart: queries 503 from both APIs {seen[0]:.2f} s after the stop, "
        f"Postgres back after {seen[1]:.2f} s, read models caught up {caught_up:.1f} s after "
        f"the load; 503 window {run.load.window(503, since=run.fault_at):.2f} s; " + _describe(run)
    )
    await wait_ready(cluster)


async def test_one_api_process_killed(stack: ClusterStack, figures: list[str]) -> None:
    """The other serves; a command lost in flight, retried with its Idempotency-Key, is
    acknowledged once (one job)."""
    cluster = stack.cluster
    victim = cluster.of("api")[0]

    async def kill_api(load: Load) -> None:
        victim.kill()

    try:
        run = await under_load(stack, kill_api)
    finally:
        cluster.heal()
    check_every_job_ended_once(run)
    load = run.load
    assert set(load.statuses()) <= {0, 202, 503}, load.statuses()
    assert load.lost, "no command was in flight on the killed API"
    lost_jobs = {job for job, key in load.accepted.items() if key in load.lost}
    assert len(lost_jobs) == len(load.lost)  # each acknowledged with one job
    served_after = [
        a for a in load.answers if a.at > run.fault_at and a.status == 202 and a.api == 1
    ]
    assert served_after
    await check_read_models(stack, run)
    figures.append(
        f"API kill -9: {len(load.lost)} commands lost in flight, retried on the other API "
        f"and acknowledged once each; " + _describe(run)
    )
    await wait_ready(cluster)

"""`/readyz` is ready only when a command can be appended and a job will be picked up,
and not while the read models are stalled: checked on a start over a long log, with the
services coming up one by one. Before, it said ready as soon as NATS and Postgres
answered: with no executor consumer (the first job waited for nothing) and with no
projector (every read stale)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import aiohttp
import msgspec
import nats
from nats.aio.client import Client as NATS

from events import EventStore, event_subject
from projections import LIVE_SCHEMA, Projector, apply_migrations, connect, create_pool
from services.api.readiness import Readiness, ReadinessReport
from services.durables import EXECUTOR_DURABLE
from services.embedded.stack import ensure_admin_key
from services.settings import Settings
from tests._infra import needs_bubblewrap, wait_until
from tests.api.conftest import free_port, start_services, stop_services, wait_key_works
from tests.projections._support import append_all, running, user_created

EVENTS = 20_000


async def _fill(nats_url: str, count: int) -> int:
    """Append `count` events straight to the stream (core publishes, one flush): a long
    log in about a second. Returns the stream's last sequence."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        # The executor has not run on this log yet: no durable consumer of its own.
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(Settings().stream_name, EXECUTOR_DURABLE)
        for _ in range(count):
            event = user_created()
            subject = event_subject(event.aggregate, event.aggregate_id, event.type)
            await nc.publish(subject, msgspec.json.encode(event), headers={"Nats-Msg-Id": event.id})
        await nc.flush()

        async def stored() -> bool:
            return (await js.stream_info(Settings().stream_name)).state.last_seq >= count

        await wait_until(stored, what="the events to be stored", timeout_s=30)
        return int((await js.stream_info(Settings().stream_name)).state.last_seq)
    finally:
        await nc.drain()


async def _readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_ready_waits_for_the_projection_and_the_executors_consumer(
    stack_env: dict[str, str],
) -> None:
    needs_bubblewrap("the executor's process runtime")
    env = {**stack_env, "CLINAI_PORT": str(free_port()), "CLINAI_READY_PROJECTION_STALL_S": "1"}
    settings = Settings.from_env(env)
    last = await _fill(env["CLINAI_NATS_URL"], EVENTS)
    admin_key = await ensure_admin_key(settings) or (settings.data_dir / "admin.key").read_text()
    url = settings.api_url
    procs = start_services(env, ["api"])
    seen: list[tuple[int, dict[str, Any]]] = []
    try:
        async with aiohttp.ClientSession() as http:

            async def answer(predicate: Any) -> bool:
                try:
                    seen.append(await _readyz(http, url))
                except aiohttp.ClientError:
                    return False
                return bool(predicate(*seen[-1]))

            # No projector, no executor: not ready, for both reasons.
            await wait_until(
                lambda: answer(
                    lambda status, body: (
                        status == 503
                        and "the projector is stopped or failing" in body["detail"]
                        and f"durable consumer '{EXECUTOR_DURABLE}' does not exist"
                        in body["detail"]
                    )
                ),
                what="/readyz to report both problems",
                timeout_s=30,
            )
            assert seen[-1][1]["stream_seq"] >= last
            assert all(status == 503 for status, _ in seen)

            procs += start_services(env, ["projector"])
            await wait_until(
                lambda: answer(lambda status, body: "projector" not in body.get("detail", "")),
                what="the projection to catch up",
                timeout_s=60,
            )
            assert seen[-1][0] == 503 and "durable consumer" in seen[-1][1]["detail"]

            procs += start_services(env, ["executor"])
            await wait_until(
                lambda: answer(lambda status, body: status == 200),
                what="/readyz to say ready once the executor consumes",
                timeout_s=60,
            )
            ready = seen[-1][1]
            assert ready["status"] == "ready" and ready["quarantined_events"] == 0
            assert ready["projection_seq"] >= last

            # Ready means a command is taken at once.
            wait_key_works(url, admin_key.strip())
            started = time.monotonic()
            async with http.post(
                f"{url}/v1/models",
                json={"name": "after-ready"},
                headers={"Authorization": f"Bearer {admin_key.strip()}"},
            ) as resp:
                assert resp.status == 201, await resp.text()
            assert time.monotonic() - started < 2
    finally:
        stop_services(procs)


async def test_the_projection_counts_as_stalled_only_past_the_allowed_lag_and_age(
    nc: NATS, store: EventStore, database_url: str
) -> None:
    last = await append_all(store, [user_created() for _ in range(10)])
    conn = await connect(database_url)
    try:
        await apply_migrations(conn, LIVE_SCHEMA)
        await conn.execute("INSERT INTO checkpoint VALUES ('read_models', 2)")
    finally:
        await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=2)
    later = time.time() + 60  # a clock a minute ahead: every event is a minute old

    def stalled(report: ReadinessReport) -> list[str]:
        return [p for p in report.problems if "projector is stopped or failing" in p]

    try:
        checks = Readiness(
            nc, pool, stream=store.stream, max_lag=8, stall_s=30, clock=lambda: later
        )
        report = await checks.check()
        assert (report.projection_seq, report.stream_seq, stalled(report)) == (2, last, [])
        checks = Readiness(
            nc, pool, stream=store.stream, max_lag=7, stall_s=30, clock=lambda: later
        )
        [problem] = stalled(await checks.check())
        assert problem.startswith("the read models are at sequence 2, 8 events behind the log")
        assert "have lacked sequence 10 for 6" in problem and "s (limit 30 s" in problem
        checks = Readiness(nc, pool, stream=store.stream, max_lag=0, stall_s=30)  # the real clock
        assert stalled(await checks.check()) == []  # every event is younger than 30 s
    finally:
        await pool.close()


async def test_not_ready_without_a_running_projector_even_with_nothing_to_project(
    nc: NATS, store: EventStore, database_url: str
) -> None:
    """Before, a stopped or crash-looping projector read as ready while the read models
    were current: the next write was never read back."""
    await append_all(store, [user_created() for _ in range(3)])
    pool = await create_pool(database_url, min_size=1, max_size=2)

    def no_projector(report: ReadinessReport) -> list[str]:
        return [p for p in report.problems if p.startswith("no projector is running")]

    try:
        checks = Readiness(nc, pool, stream=store.stream, max_lag=1000, stall_s=30)
        [problem] = no_projector(await checks.check())
        assert "clinai serve projector" in problem
        async with running(Projector(database_url, store)) as task:

            async def led() -> bool:
                return not no_projector(await checks.check()) or task.done()

            await wait_until(led, what="the projector's lock to show", timeout_s=30)
            assert not task.done()

        async def gone() -> bool:
            return bool(no_projector(await checks.check()))

        await wait_until(gone, what="the lock to go with the projector", timeout_s=30)
    finally:
        await pool.close()

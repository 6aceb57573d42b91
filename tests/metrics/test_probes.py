"""What the metrics read when scraped, against real NATS and Postgres: a durable
consumer's backlog, unacknowledged and redelivered messages (`consumer_info`), the
projection lag (the stream's last sequence minus the checkpoint in Postgres), served on a
metrics port; and a probe that cannot read leaves the scrape answering without it."""

from __future__ import annotations

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from events import EventStore, new_id
from projections import LIVE_SCHEMA, apply_migrations
from projections.apply import PROJECTION
from projections.db import connect
from services.embedded import EmbeddedError
from services.embedded.stack import SERVICES, service_metrics_ports
from services.metrics import (
    ConsumerProbe,
    MetricsPortError,
    ProjectionProbe,
    ServiceMetrics,
    metrics_server,
)
from services.projector.service import _checkpoint
from services.settings import Settings, SettingsError
from tests._events import job_requested
from tests.metrics._scrape import parse, scrape, value

DURABLE = "metrics-probe"


async def _requested(store: EventStore, count: int) -> None:
    for _ in range(count):
        job_id = new_id("job")
        await store.append(job_requested(job_id, "usr_a", actor="usr_a"), expected=0)


async def test_a_consumers_backlog_is_read_from_jetstream(nc: NATS, store: EventStore) -> None:
    js = nc.jetstream()
    await js.add_consumer(
        store.stream,
        ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject="clinai.job.*.JobRequested",
        ),
    )
    metrics = ServiceMetrics("test")
    ConsumerProbe(metrics, js, store.stream, DURABLE)
    await _requested(store, 5)
    async with metrics_server(metrics, "127.0.0.1", 0) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        samples = await scrape(url)
        assert value(samples, "clinai_consumer_pending_messages", consumer=DURABLE) == 5
        assert value(samples, "clinai_consumer_ack_pending_messages", consumer=DURABLE) == 0

        pull = await js.pull_subscribe_bind(DURABLE, store.stream)
        taken = await pull.fetch(2, timeout=5)
        assert len(taken) == 2
        samples = await scrape(url)
        assert value(samples, "clinai_consumer_pending_messages", consumer=DURABLE) == 3
        assert value(samples, "clinai_consumer_ack_pending_messages", consumer=DURABLE) == 2
        assert value(samples, "clinai_consumer_redelivered_messages", consumer=DURABLE) == 0

        for msg in taken:
            await msg.nak()
        # The server hands the rest out first, then the two again: hold all of them.
        held = list(await pull.fetch(5, timeout=5))
        while sum(msg.metadata.num_delivered == 2 for msg in held) < 2:
            held += await pull.fetch(1, timeout=5)
        samples = await scrape(url)
        assert value(samples, "clinai_consumer_redelivered_messages", consumer=DURABLE) == 2

        # Gone from the server: the scrape still answers, without the consumer's values.
        await js.delete_consumer(store.stream, DURABLE)
        samples = await scrape(url)
        pending = samples[("clinai_consumer_pending_messages", frozenset({("consumer", DURABLE)}))]
        assert pending != pending  # NaN: not read
        probe = f"consumer_{DURABLE}"
        assert value(samples, "clinai_metrics_probe_failures_total", probe=probe) == 1


async def test_projection_lag_is_the_stream_minus_the_checkpoint(
    store: EventStore, nats_url: str, database_url: str
) -> None:
    settings = Settings(nats_url=nats_url, database_url=database_url)
    metrics = ServiceMetrics("projector")
    ProjectionProbe(metrics, store.stream_last_seq, lambda: _checkpoint(settings))
    await _requested(store, 3)
    # No projector has made its tables yet: nothing is projected.
    samples = parse((await metrics.exposition()).decode())
    assert value(samples, "clinai_stream_last_sequence") == 3
    assert value(samples, "clinai_projection_checkpoint") == 0
    assert value(samples, "clinai_projection_lag_events") == 3
    conn = await connect(database_url)
    try:
        await apply_migrations(conn, LIVE_SCHEMA)
        # As a projector that applied the first two events leaves it.
        await conn.execute(
            "INSERT INTO checkpoint (projection, last_seq) VALUES ($1, 2) "
            "ON CONFLICT (projection) DO UPDATE SET last_seq = 2",
            PROJECTION,
        )
    finally:
        await conn.close()
    samples = parse((await metrics.exposition()).decode())
    assert value(samples, "clinai_projection_checkpoint") == 2
    assert value(samples, "clinai_projection_lag_events") == 1


async def test_a_taken_metrics_port_is_refused_by_name() -> None:
    metrics = ServiceMetrics("executor")
    async with metrics_server(metrics, "127.0.0.1", 0) as port:
        with pytest.raises(MetricsPortError) as refused:
            async with metrics_server(ServiceMetrics("builder"), "127.0.0.1", port):
                pass
    assert "CLINAI_METRICS_PORT" in refused.value.hint
    assert f"127.0.0.1:{port}" in str(refused.value)


def test_clinai_up_gives_each_service_its_own_metrics_port() -> None:
    assert service_metrics_ports(None) == {}
    ports = service_metrics_ports(9100)
    assert list(ports) == list(SERVICES)
    assert sorted(ports.values()) == list(range(9100, 9100 + len(SERVICES)))
    with pytest.raises(EmbeddedError):
        service_metrics_ports(65534)


def test_metrics_settings_are_checked() -> None:
    settings = Settings.from_env({"CLINAI_METRICS_PORT": "9100"})
    assert (settings.metrics_port, settings.metrics_host, settings.metrics_token) == (
        9100,
        "127.0.0.1",
        None,
    )
    assert Settings.from_env({}).metrics_port is None  # no metrics port unless asked
    for bad in ({"CLINAI_METRICS_PORT": "70000"}, {"CLINAI_METRICS_TOKEN": "short"}):
        with pytest.raises(SettingsError, match="CLINAI_METRICS_"):
            Settings.from_env(bad)
    assert msgspec.structs.replace(settings, metrics_port=None).metrics_port is None

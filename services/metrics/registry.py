"""One service process's metrics: its registry, and the probes a scrape runs first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Probe", "ServiceMetrics"]

log = logging.getLogger("clinai.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
# A probe (a JetStream or Postgres read) that takes longer is given up: the scrape still
# answers, without that probe's values (Prometheus's own scrape timeout is 10 s).
_PROBE_TIMEOUT_S = 3.0

Probe = Callable[[], Awaitable[None]]
"""Reads what it reports (a consumer's backlog, a checkpoint) and sets its gauges; on a
failure it raises, after clearing the gauges it could not read."""


class ServiceMetrics:
    """`registry` holds what the service counts; `add_probe` adds a read made at each
    scrape; `exposition()` runs the probes (concurrently, bounded in time), then renders
    the registry in Prometheus's text format."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self._probes: list[tuple[str, Probe]] = []
        self._probe_failures = Counter(
            "clinai_metrics_probe_failures_total",
            "Scrape-time reads (JetStream, Postgres) that failed or timed out; their "
            "gauges are missing from that scrape.",
            ["probe"],
            registry=self.registry,
        )

    def add_probe(self, name: str, probe: Probe) -> None:
        self._probes.append((name, probe))

    async def exposition(self) -> bytes:
        if self._probes:
            results = await asyncio.gather(
                *(asyncio.wait_for(probe(), _PROBE_TIMEOUT_S) for _, probe in self._probes),
                return_exceptions=True,
            )
            for (name, _), result in zip(self._probes, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    self._probe_failures.labels(name).inc()
                    log.debug("metrics probe %s failed: %r", name, result)
        return generate_latest(self.registry)

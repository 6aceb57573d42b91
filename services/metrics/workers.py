"""The executor's warm workers by version, read from its runtime when scraped, and its
jobs waiting for a slot or running, read from its slots."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.metrics.registry import ServiceMetrics

__all__ = ["ExecutorJobs", "WarmWorkers"]

UNKNOWN_VERSION = "unknown"


class WarmWorkers(Collector):
    """`clinai_warm_workers{version, state}`: live workers idle or busy. `counts()`
    gives (idle, busy) per artifact; `versions()` the version each artifact was built
    for (artifacts are what workers run; an artifact reused by several versions shows
    under the last one seen)."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        counts: Callable[[], Mapping[str, tuple[int, int]]],
        versions: Callable[[], Mapping[str, str]],
    ) -> None:
        self._counts = counts
        self._versions = versions
        metrics.registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "clinai_warm_workers",
            "Live workers of this executor, by version and state (idle or busy).",
            labels=["version", "state"],
        )
        versions = self._versions()
        totals: dict[tuple[str, str], int] = {}
        for artifact, (idle, busy) in self._counts().items():
            version = versions.get(artifact, UNKNOWN_VERSION)
            for state, count in (("idle", idle), ("busy", busy)):
                totals[(version, state)] = totals.get((version, state), 0) + count
        for (version, state), count in sorted(totals.items()):
            family.add_metric([version, state], count)
        yield family


class ExecutorJobs(Collector):
    """`clinai_executor_jobs{state}`: this executor's jobs `waiting` for a slot (held,
    not started) and `running`. Summed over executors, with the executor consumer's
    backlog (`clinai_consumer_pending_messages`, jobs no executor holds yet), it is
    what is queued and running on the platform: what to scale executors on."""

    def __init__(
        self, metrics: ServiceMetrics, waiting: Callable[[], int], running: Callable[[], int]
    ) -> None:
        self._waiting = waiting
        self._running = running
        metrics.registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "clinai_executor_jobs",
            "Jobs this executor holds, by state: waiting for a slot, or running.",
            labels=["state"],
        )
        family.add_metric(["waiting"], self._waiting())
        family.add_metric(["running"], self._running())
        yield family

"""What the builder counts: builds by outcome (built, reused, failed) and how long they took."""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Histogram

from services.metrics.registry import ServiceMetrics

__all__ = ["BuildMetrics", "BuildOutcome"]

BuildOutcome = Literal["built", "reused", "failed"]

_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


class BuildMetrics:
    def __init__(self, metrics: ServiceMetrics | None = None) -> None:
        registry = (metrics or ServiceMetrics("builder")).registry
        self._builds = Counter(
            "clinai_builds_total",
            "Versions this builder ended, by outcome: built, reused (an identical "
            "package's artifact) or failed.",
            ["outcome"],
            registry=registry,
        )
        self._duration = Histogram(
            "clinai_build_duration_seconds",
            "How long a build took, by outcome (a reused artifact takes none).",
            ["outcome"],
            buckets=_BUCKETS,
            registry=registry,
        )

    def ended(self, outcome: BuildOutcome, duration_s: float | None) -> None:
        self._builds.labels(outcome).inc()
        if duration_s is not None:
            self._duration.labels(outcome).observe(duration_s)

"""What the notifier counts of webhooks: delivery attempts by outcome and latency,
endpoints it disabled, deliveries waiting; and, read from Postgres when scraped, the
endpoints disabled now."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

from services.metrics.registry import ServiceMetrics

__all__ = ["WebhookMetrics"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WebhookMetrics:
    def __init__(self, metrics: ServiceMetrics | None = None) -> None:
        self._metrics = metrics or ServiceMetrics("notifier")
        registry = self._metrics.registry
        self._attempts = Counter(
            "clinai_webhook_deliveries_total",
            "Delivery attempts, by outcome: succeeded, retrying (failed, tried again "
            "later) or failed (for good).",
            ["outcome"],
            registry=registry,
        )
        self._latency = Histogram(
            "clinai_webhook_delivery_seconds",
            "How long a delivery attempt's HTTP request took, by outcome.",
            ["outcome"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self._disabled_here = Counter(
            "clinai_webhook_endpoint_disables_total",
            "Endpoints this notifier disabled after they kept failing.",
            registry=registry,
        )
        self._disabled_now = Gauge(
            "clinai_webhook_endpoints_disabled",
            "Webhook endpoints disabled now (not deleted), as the read models have them.",
            registry=registry,
        )
        self._pending = Gauge(
            "clinai_webhook_deliveries_scheduled",
            "Deliveries this notifier holds, due now or waiting for a retry.",
            registry=registry,
        )

    def attempted(self, outcome: str, latency_s: float | None) -> None:
        """An attempt was recorded; `latency_s` None: no request was sent (refused)."""
        self._attempts.labels(outcome).inc()
        if latency_s is not None:
            self._latency.labels(outcome).observe(latency_s)

    def disabled(self) -> None:
        self._disabled_here.inc()

    def watch(
        self, scheduled: Callable[[], int], count_disabled: Callable[[], Awaitable[int]]
    ) -> None:
        """Report `scheduled()` at each scrape, and `count_disabled()` (a query) then."""
        self._pending.set_function(scheduled)

        async def probe() -> None:
            try:
                self._disabled_now.set(await count_disabled())
            except BaseException:
                self._disabled_now.set(float("nan"))
                raise

        self._metrics.add_probe("webhook_endpoints_disabled", probe)

"""Prometheus metrics of every service, with `prometheus_client`.

Each service process has its own `ServiceMetrics` (its own registry, no global one),
made in its lifespan and passed down to what counts: the executor's `JobMetrics`, the
builder's `BuildMetrics`, the notifier's `WebhookMetrics`, the API's `HttpMetrics`
middleware. What lives elsewhere (a consumer's backlog in JetStream, the projection's
checkpoint in Postgres, the disabled webhook endpoints) is read by probes when scraped,
never per message. `metrics_server` serves `/metrics` on a port of its own; the API also
answers `/metrics` on its own port, to an authenticated caller."""

from services.metrics.builds import BuildMetrics
from services.metrics.http import HttpMetrics
from services.metrics.jobs import JobMetrics
from services.metrics.registry import Probe, ServiceMetrics
from services.metrics.server import MetricsPortError, metrics_server, serving_metrics
from services.metrics.stream import ConsumerProbe, ProjectionProbe
from services.metrics.webhooks import WebhookMetrics
from services.metrics.workers import ExecutorJobs, WarmWorkers

__all__ = [
    "BuildMetrics",
    "ConsumerProbe",
    "ExecutorJobs",
    "HttpMetrics",
    "JobMetrics",
    "MetricsPortError",
    "Probe",
    "ProjectionProbe",
    "ServiceMetrics",
    "WarmWorkers",
    "WebhookMetrics",
    "metrics_server",
    "serving_metrics",
]

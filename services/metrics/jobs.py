"""What the executor counts of jobs: attempts started, jobs ended by status and failure
kind, and how long they waited in the queue, set up and ran. Each is a counter
increment or a histogram observation in memory: nothing per job leaves the process."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from events import JobAborted, JobCanceled, JobFailed, JobSucceeded
from services.metrics.registry import ServiceMetrics

__all__ = ["JobMetrics"]

_WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
_RUN_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip


class JobMetrics:
    def __init__(self, metrics: ServiceMetrics | None = None) -> None:
        registry = (metrics or ServiceMetrics("executor")).registry
        self._started = Counter(
            "clinai_job_attempts_started_total",
            "Job attempts started by this executor (a retried job starts more than one).",
            registry=registry,
        )
        self._ends = Counter(
            "clinai_jobs_ended_total",
            "Jobs this executor ended, by status (succeeded, failed, canceled, aborted) and "
            "failure kind (none when succeeded; deadline when aborted).",
            ["status", "kind"],
            registry=registry,
        )
        self._queue_wait = Histogram(
            "clinai_job_queue_wait_seconds",
            "From a job's request to the start of its first attempt.",
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self._setup = Histogram(
            "clinai_job_setup_seconds",
            "An attempt's time before the model ran: fetching the input, and starting a "
            "worker when none was warm.",
            buckets=_RUN_BUCKETS,
            registry=registry,
        )
        self._run = Histogram(
            "clinai_job_run_seconds",
            "How long the model ran, by the job's status.",
            ["status"],
            buckets=_RUN_BUCKETS,
            registry=registry,
        )
        self._ended_children: dict[tuple[str, str], Counter] = {}
        self._run_children: dict[str, Histogram] = {}

    def started(self, attempt: int, queued_s: float) -> None:
        self._started.inc()
        if attempt == 1:  # later attempts waited for an earlier one too
            self._queue_wait.observe(queued_s)

    def job_ended(self, event: JobSucceeded | JobFailed | JobCanceled | JobAborted) -> None:
        """`event`, a job's terminal event, was appended."""
        match event:
            case JobSucceeded(timings=timings):
                self._ended("succeeded", "none", timings.setup_s, timings.run_s)
            case JobFailed(kind=kind, timings=timings):
                # A job that never ran (refused, no artifact) has no timings to observe.
                ran = timings.run_s > 0 or timings.setup_s > 0
                self._ended("failed", kind, *((timings.setup_s, timings.run_s) if ran else ()))
            case JobCanceled():
                self._ended("canceled", "canceled")
            case JobAborted(reason=reason):
                self._ended("aborted", reason)

    def _ended(
        self, status: str, kind: str, setup_s: float | None = None, run_s: float | None = None
    ) -> None:
        key = (status, kind)
        counter = self._ended_children.get(key)
        if counter is None:
            counter = self._ended_children[key] = self._ends.labels(*key)
        counter.inc()
        if run_s is not None:
            histogram = self._run_children.get(status)
            if histogram is None:
                histogram = self._run_children[status] = self._run.labels(status)
            histogram.observe(run_s)
        if setup_s is not None:
            self._setup.observe(setup_s)

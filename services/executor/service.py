"""The executor service: a durable consumer of `JobRequested` and `JobCancelRequested`
that runs jobs on the runtime, several at a time, and records how each one ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

import msgspec

from events.subjects import PREFIX
from services.durables import EXECUTOR_DURABLE
from services.executor._claims import ResultLimits
from services.executor._fair import FairSlots
from services.executor._handler import JobHandler
from services.executor._input_url import UrlInputs
from services.executor._leases import OwnerLeases
from services.executor._owners import FairGate, RunningCaps
from services.executor._running import RunningJobs
from services.infra.connections import (
    connect_nats,
    open_blob_store,
    open_event_store,
    report_blob_store,
)
from services.infra.runtime_factory import make_runtime, service_work_dir
from services.metrics import (
    ConsumerProbe,
    ExecutorJobs,
    JobMetrics,
    ServiceMetrics,
    WarmWorkers,
    serving_metrics,
)
from services.runtimes.base import OutputLimits, Runtime
from services.settings import Settings
from services.subscribers import (
    ConsumerOptions,
    Durable,
    durable_route,
    quietly,
    stop_on_signals,
    subscribed,
)

__all__ = ["EXECUTOR_DURABLE", "EXECUTOR_SUBJECTS", "run_executor"]

log = logging.getLogger("clinai.executor")

EXECUTOR_SUBJECTS = (
    f"{PREFIX}.job.*.JobRequested",
    f"{PREFIX}.job.*.JobCancelRequested",
)


async def run_executor(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    stop: asyncio.Event | None = None,
    consumer: ConsumerOptions | None = None,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when no `stop` is given), running up
    to `settings.workers_total` jobs at once, shared in turn between their owners, out
    of up to `settings.executor_window` requested jobs held (see `_fair`). A given
    `runtime` is used and left open; otherwise one is made from the settings and closed."""
    stop = stop or stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect_nats(settings, name="executor")
        stack.push_async_callback(quietly, nc.drain)
        blobs = open_blob_store(settings)
        stack.push_async_callback(blobs.close)
        store = await open_event_store(settings, nc)
        if runtime is None:
            runtime = await make_runtime(settings)
            stack.push_async_callback(runtime.close)
        local = RunningJobs()
        stack.push_async_callback(quietly, local.close)
        await report_blob_store(blobs, log)
        worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        metrics = ServiceMetrics("executor")
        handler = JobHandler(
            store=store,
            blobs=blobs,
            runtime=runtime,
            local=local,
            work_dir=service_work_dir(settings, "executor"),
            worker_id=worker_id,
            max_attempts=settings.job_max_attempts,
            max_timeout_s=settings.job_timeout_max_s,
            result_limits=ResultLimits(
                inline_bytes=settings.result_inline_bytes, max_bytes=settings.result_max_bytes
            ),
            output_limits=OutputLimits(
                max_files=settings.max_output_files,
                max_file_bytes=settings.max_output_file_bytes,
                max_total_bytes=settings.max_output_bytes,
            ),
            url_inputs=UrlInputs.from_settings(settings),
            metrics=JobMetrics(metrics),
        )
        WarmWorkers(metrics, runtime.warm_workers, handler.artifact_versions)
        ConsumerProbe(metrics, nc.jetstream(), settings.stream_name, EXECUTOR_DURABLE)
        await stack.enter_async_context(serving_metrics(metrics, settings))
        slots = FairSlots(settings.workers_total)
        ExecutorJobs(metrics, lambda: slots.waiting, lambda: slots.taken)
        leases = await OwnerLeases.open(nc.jetstream(), replicas=settings.stream_replicas)
        stack.push_async_callback(leases.close)
        gate = FairGate(
            handler, slots, RunningCaps(store, settings.max_running_jobs_per_owner), leases
        )
        await local.listen(nc, on_elsewhere=handler.on_cancel_heard)
        durable = Durable(
            stream=settings.stream_name,
            name=EXECUTOR_DURABLE,
            subjects=EXECUTOR_SUBJECTS,
            concurrency=settings.executor_window,
            options=_holding(consumer or ConsumerOptions(), settings.executor_window),
        )
        await stack.enter_async_context(subscribed(nc, durable, [durable_route(gate, durable)]))
        log.info("executor %s consuming %s (%s)", worker_id, EXECUTOR_SUBJECTS, runtime.name)
        await stop.wait()
        # Once stopping, no waiting job starts: its message goes back to the server.
        slots.close()


def _holding(options: ConsumerOptions, window: int) -> ConsumerOptions:
    """`options` with room on the server for ten executors' windows of unacknowledged
    messages (the durable's max_ack_pending is shared by every executor on it)."""
    wanted = 10 * window
    if options.max_ack_pending >= wanted:
        return options
    return msgspec.structs.replace(options, max_ack_pending=wanted)

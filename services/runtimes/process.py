"""The `process` runtime: a virtualenv per requirements set, warm workers under bubblewrap.

See services/runtimes/_sandbox.py for what the sandbox contains and how it is limited.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from services.runtimes import _build
from services.runtimes._build_sandbox import BuildTools
from services.runtimes._framing import JobResponse, ProtocolError
from services.runtimes._freeze import Frozen
from services.runtimes._harvest import HarvestError, harvest_deadline, harvest_failure_kind
from services.runtimes._jobdir import read_tail
from services.runtimes._launch import (
    ProcessRuntimeConfig,
    StartFailedError,
    WorkerLauncher,
    worker_death,
)
from services.runtimes._outcomes import fail as _fail
from services.runtimes._outcomes import (
    from_death,
    from_response,
    job_timeout,
)
from services.runtimes._pip import PipOptions
from services.runtimes._pool import AcquireCanceledError, PoolClosedError, WorkerPool
from services.runtimes._worker import ProcessWorker
from services.runtimes.base import (
    Artifact,
    BuildFailedError,
    JobOutcome,
    JobSpec,
    LogSink,
    SandboxRuntimeError,
)

__all__ = ["ProcessRuntime", "ProcessRuntimeConfig"]


class _Running:
    """A job from the moment run_job is called: cancel reaches it while it waits for a
    worker, while its worker starts (import, setup()) and while it runs."""

    def __init__(self) -> None:
        self.worker: ProcessWorker | None = None
        self.canceled = asyncio.Event()


class ProcessRuntime:
    name = "process"

    def __init__(self, config: ProcessRuntimeConfig) -> None:
        if config.tmp_size_mb < 1:
            raise ValueError(f"tmp_size_mb must be >= 1, got {config.tmp_size_mb}")
        if config.memory_limit_mb < 64:
            raise ValueError(f"memory_limit_mb must be >= 64, got {config.memory_limit_mb}")
        if config.max_processes < 4:
            raise ValueError(f"max_processes must be >= 4, got {config.max_processes}")
        self._config = config
        self._root = Path(config.work_root)
        self._pool: WorkerPool[ProcessWorker] = WorkerPool(
            max_per_key=config.max_workers_per_version,
            max_total=config.max_workers_total,
            idle_timeout_s=config.idle_timeout_s,
        )
        self._build_locks: dict[str, asyncio.Lock] = {}
        self._running: dict[str, _Running] = {}
        self._launcher = WorkerLauncher(config)

    # -- availability ------------------------------------------------------------------

    @property
    def sandboxed(self) -> bool:
        return not self._config.unsafe_no_sandbox

    def warm_workers(self) -> dict[str, tuple[int, int]]:
        """Live workers per artifact reference: (idle, busy)."""
        return self._pool.warm_workers()

    @property
    def live_workers(self) -> int:
        """Workers currently alive (idle or busy)."""
        return self._pool.live

    @property
    def sandbox_uids(self) -> range | None:
        """The uids this runtime's workers run as (held by no other runtime on the
        host); None until the first worker starts, or when workers keep our own uid."""
        return self._launcher.sandbox_uids

    def claim_uids(self) -> range | None:
        """Claim this runtime's uid range now (else the first worker does); None when
        workers do not drop to their own uids (not root, or not sandboxed)."""
        return self._launcher.claim_uids()

    # -- build -------------------------------------------------------------------------

    async def build(
        self, *, package_dir: Path, package_hash: str, requirements_hash: str, log: LogSink
    ) -> Artifact:
        if self.sandboxed:
            self._launcher.tools()
        _build.safe_component(package_hash, "package_hash")
        _build.safe_component(requirements_hash, "requirements_hash")
        config = self._config
        pip = await PipOptions.with_host_ca(
            index_url=config.index_url,
            extra_index_urls=(config.extra_index_url,) if config.extra_index_url else (),
            ca_bundle=Path(config.ca_bundle) if config.ca_bundle else None,
        )
        lock = self._build_locks.setdefault(requirements_hash, asyncio.Lock())
        tools, uid = None, None
        if self.sandboxed:  # the build runs as one of the workers' uids, in a sandbox
            bwrap, setpriv = self._launcher.tools()
            seccomp = await self._launcher.seccomp()
            uid = self._launcher.take_uid()
            tools = BuildTools(bwrap=bwrap, setpriv=setpriv, uid=uid, seccomp=seccomp)
        try:
            venv, base_prefix = await _build.ensure_venv(
                envs_root=self._root / "envs",
                key=requirements_hash,
                python=config.python,
                requirements=package_dir / "requirements.txt",
                pip=pip,
                pip_cache_dir=Path(config.wheel_cache_dir or self._root / "wheel-cache"),
                timeout_s=config.build_timeout_s,
                log=log,
                lock=lock,
                tools=tools,
            )
        finally:
            self._launcher.give_back_uid(uid)
        await log("$ copy the package\n")
        try:
            package = await asyncio.to_thread(
                _build.install_package, package_dir, self._root / "artifacts", package_hash
            )
            await asyncio.to_thread(_build.ensure_runner_lib, self._root / "lib")
        except OSError as err:
            raise BuildFailedError(f"copying the package failed: {err}") from err
        artifact = Artifact(
            runtime=self.name,
            reference=str(package),
            package_hash=package_hash,
            details={
                "venv": str(venv),
                "base_prefix": base_prefix,
                "requirements_hash": requirements_hash,
            },
        )
        await log("$ smoke check: import predict.py in the sandbox\n")
        try:
            worker = await self._launcher.start(artifact, check=True)
        except StartFailedError as err:
            tail = "\n".join(part for part in (err.outcome.traceback, err.outcome.log) if part)
            raise BuildFailedError(
                f"smoke check failed: {err.outcome.message}",
                log_tail=tail[-8000:],
                hint="fix predict.py",
            ) from err
        await worker.kill()
        await log("build finished\n")
        return artifact

    async def has_artifact(self, artifact: Artifact) -> bool:
        venv = artifact.details.get("venv")
        if venv is None:
            return False
        found = await asyncio.to_thread(
            lambda: Path(artifact.reference).is_dir() and Path(venv).is_dir()
        )
        return found

    # -- workers -----------------------------------------------------------------------

    # -- jobs ----------------------------------------------------------------------------

    async def run_job(self, artifact: Artifact, job: JobSpec) -> JobOutcome:
        _build.safe_component(job.job_id, "job_id")
        if self.sandboxed:
            self._launcher.tools()
        if job.job_id in self._running:
            raise ValueError(f"job {job.job_id} is already running")
        running = self._running[job.job_id] = _Running()
        try:
            return await self._acquire_and_run(artifact, job, running)
        finally:
            del self._running[job.job_id]

    async def _acquire_and_run(
        self, artifact: Artifact, job: JobSpec, running: _Running
    ) -> JobOutcome:
        key = artifact.reference
        try:
            worker, fresh = await self._pool.acquire(
                key,
                lambda: self._launcher.start(artifact),
                owner=job.owner,
                cancel=running.canceled,
            )
        except AcquireCanceledError:
            return _fail("canceled", "the job was canceled before it started running")
        except StartFailedError as err:
            return err.outcome
        except PoolClosedError:
            return _fail("infrastructure", "the runtime is closed")
        except (SandboxRuntimeError, OSError) as err:
            return _fail("infrastructure", f"could not start a worker: {err}")
        running.worker = worker
        reuse = False
        try:
            outcome = await self._run_on(worker, job, running)
            reuse = outcome.ok or outcome.kind == "model_error"
            if fresh:
                outcome = msgspec.structs.replace(outcome, setup_s=worker.setup_s)
            return outcome
        finally:
            await self._pool.release(key, worker, owner=job.owner, reuse=reuse and worker.alive)

    async def _run_on(self, worker: ProcessWorker, job: JobSpec, running: _Running) -> JobOutcome:
        files = worker.files
        try:
            request = await files.prepare(job)
        except OSError as err:
            return _fail("infrastructure", f"could not prepare the job's files: {err}")
        started, started_at = time.perf_counter(), time.monotonic()
        task = asyncio.ensure_future(worker.channel.request(request))
        try:
            done, _ = await asyncio.wait({task}, timeout=job.timeout_s)
            elapsed = time.perf_counter() - started
            if running.canceled.is_set() or not done:
                log = read_tail(files.log, self._config.log_tail_bytes)
                if running.canceled.is_set():
                    return _fail("canceled", "the job was canceled", log=log, run_s=elapsed)
                await worker.kill()
                return job_timeout(job.timeout_s, log=log, run_s=elapsed)
            try:
                response = task.result()
            except ProtocolError:
                log = read_tail(files.log, self._config.log_tail_bytes)
                return await self._died(worker, running, log, elapsed)
            frozen: Frozen | None = None
            if response.left_running and files.has_outputs():
                # What the model left running could change out/ while it is read and
                # emptied: it is stopped until then (or, if it cannot be, ends with the
                # worker, and the next job gets a fresh one).
                frozen = await worker.freeze()
                if frozen is None:
                    await worker.stop()
            try:
                return await self._collect(worker, job, response, started_at, elapsed)
            finally:
                if frozen is not None:
                    try:
                        await files.cleared()
                    finally:
                        frozen.thaw()
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _collect(
        self,
        worker: ProcessWorker,
        job: JobSpec,
        response: JobResponse,
        started_at: float,
        elapsed: float,
    ) -> JobOutcome:
        """The job's outcome with its log and outputs (none for a failed job), read
        from the worker's folder, which is emptied for the next job."""
        files = worker.files
        dest = job.output_dir if response.ok else None
        limit = self._config.log_tail_bytes
        try:
            log, outputs = await files.harvest(
                dest,
                limit,
                limits=job.output_limits,
                deadline=harvest_deadline(started_at, job.timeout_s),
                uid=worker.uid,
            )
        except HarvestError as err:  # the worker is not reused
            log = await asyncio.to_thread(read_tail, files.log, limit)
            if not response.ok:  # the model failed and left too much to clear
                await worker.stop()
                return from_response(
                    response, log=log, memory_limit_mb=self._config.memory_limit_mb
                )
            return _fail(harvest_failure_kind(err), err.message, log=log, run_s=elapsed)
        except OSError as err:
            return _fail("infrastructure", f"could not collect the outputs: {err}")
        outcome = from_response(response, log=log, memory_limit_mb=self._config.memory_limit_mb)
        return msgspec.structs.replace(outcome, outputs=tuple(outputs))

    async def _died(
        self, worker: ProcessWorker, running: _Running, log: str, elapsed: float
    ) -> JobOutcome:
        death = await worker_death(worker)
        if running.canceled.is_set():
            return _fail("canceled", "the job was canceled", log=log, run_s=elapsed)
        return from_death(
            death,
            memory_limit_mb=self._config.memory_limit_mb,
            cpu_time_limit_s=self._config.cpu_time_limit_s,
            log=log,
            run_s=elapsed,
        )

    async def cancel_job(self, job_id: str) -> bool:
        running = self._running.get(job_id)
        if running is None:
            return False
        running.canceled.set()  # stops a wait for a worker, or a worker's start
        if running.worker is not None:
            await running.worker.kill()
        return True

    async def close(self) -> None:
        await self._pool.close()
        self._launcher.release_uids()

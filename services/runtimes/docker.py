"""The `docker` runtime: a package becomes an image built from a generated Dockerfile;
jobs run on warm, locked-down containers (one per worker) that serve many jobs each.

Create it with `await DockerRuntime.connect(config)`; `close()` stops every worker.
See deploy/docker.md for what access to the engine means for the host's security.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from pathlib import Path

import aiohttp
import msgspec
from aiodocker import Docker, DockerError

from services.runtimes._build import safe_component
from services.runtimes._docker_build import (
    LABEL_PACKAGE_HASH,
    BuildStream,
    find_runner_dir,
)
from services.runtimes._docker_builds import DockerBuilds
from services.runtimes._docker_config import DockerRuntimeConfig
from services.runtimes._docker_images import (
    image_id,
)
from services.runtimes._docker_worker import (
    ContainerLimits,
    ContainerWorker,
    WorkerStartError,
    container_death,
)
from services.runtimes._framing import JobRequest, JobResponse, ProtocolError
from services.runtimes._harvest import HarvestError, harvest_deadline, harvest_failure_kind
from services.runtimes._jobdir import read_tail
from services.runtimes._outcomes import (
    from_death,
    from_ready,
    from_response,
    job_timeout,
    setup_timeout,
)
from services.runtimes._pip import DEBIAN_CA_BUNDLE
from services.runtimes._pool import AcquireCanceledError, PoolClosedError, WorkerPool
from services.runtimes._seccomp import docker_profile
from services.runtimes.base import (
    Artifact,
    BuildFailedError,
    JobOutcome,
    JobSpec,
    LogSink,
    OutputCopy,
    RuntimeUnavailableError,
)

__all__ = ["DEBIAN_CA_BUNDLE", "DEFAULT_DOCKER_SOCKET", "DockerRuntime", "DockerRuntimeConfig"]

LABEL_INSTANCE = "ai.clinai.runtime-instance"

DEFAULT_DOCKER_SOCKET = "unix:///var/run/docker.sock"


class DockerRuntime:
    name = "docker"

    def __init__(
        self, docker: Docker, config: DockerRuntimeConfig, *, runner_dir: Path, seccomp_profile: str
    ) -> None:
        self._docker = docker
        self._config = config
        self._builds = DockerBuilds(docker, config, runner_dir, self._smoke_check)
        self._limits = ContainerLimits(
            memory_mb=config.memory_mb,
            cpus=config.cpus,
            pids_limit=config.pids_limit,
            tmpfs_mb=config.tmpfs_mb,
            user=config.user,
            seccomp_profile=seccomp_profile,
        )
        self._pool: WorkerPool[ContainerWorker] = WorkerPool(
            max_per_key=config.max_workers_per_version,
            max_total=config.max_workers_total,
            idle_timeout_s=config.idle_timeout_s,
        )
        self._running: dict[str, asyncio.Event] = {}
        self._present: set[str] = set()
        self._instance = uuid.uuid4().hex  # labels this runtime's containers

    @classmethod
    async def connect(
        cls, config: DockerRuntimeConfig, *, runner_dir: Path | None = None
    ) -> DockerRuntime:
        """Connect to the engine; RuntimeUnavailableError when none answers (or when
        libseccomp, which writes the containers' seccomp profile, is missing)."""
        seccomp_profile = await asyncio.to_thread(docker_profile)
        # Named explicitly: left to find a socket itself, aiodocker asserts when none exists.
        where = config.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_SOCKET
        try:
            docker = Docker(url=where)
        except ValueError as err:
            raise RuntimeUnavailableError(
                f"no Docker engine configured ({err})", hint="set docker_host or DOCKER_HOST"
            ) from err
        try:
            await docker.version()
        except (DockerError, aiohttp.ClientError, OSError) as err:
            await docker.close()
            raise RuntimeUnavailableError(
                f"the Docker engine at {where} does not answer: {err}",
                hint="start it (.ci/docker-setup on a dev host) or fix docker_host",
            ) from err
        return cls(
            docker,
            config,
            runner_dir=runner_dir or find_runner_dir(),
            seccomp_profile=seccomp_profile,
        )

    # ---- build -------------------------------------------------------------------

    async def build(
        self, *, package_dir: Path, package_hash: str, requirements_hash: str, log: LogSink
    ) -> Artifact:
        return await self._builds.build(
            package_dir=package_dir,
            package_hash=package_hash,
            requirements_hash=requirements_hash,
            log=log,
        )

    @property
    def last_build(self) -> BuildStream | None:
        """Which steps of the last image build ran and which hit the engine's cache."""
        return self._builds.last_build

    async def has_artifact(self, artifact: Artifact) -> bool:
        if artifact.reference in self._present or self._config.registry:
            return True
        return await image_id(self._docker, artifact.reference) is not None

    # ---- run ---------------------------------------------------------------------

    async def _start_worker(self, artifact: Artifact, *, check: bool = False) -> ContainerWorker:
        ref = artifact.reference
        if ref not in self._present:
            if await image_id(self._docker, ref) is None:
                await self._docker.images.pull(ref, auth=self._config.registry_auth)
            self._present.add(ref)
        return await ContainerWorker.start(
            self._docker,
            image=ref,
            limits=self._limits,
            work_root=self._config.work_dir,
            labels={LABEL_PACKAGE_HASH: artifact.package_hash, LABEL_INSTANCE: self._instance},
            ready_timeout_s=self._config.ready_timeout_s,
            log_limit=self._config.log_limit_bytes,
            check=check,
            # Versions built before revision 2 keep their images: attached stdio then.
            fifos=int(artifact.details.get("runner_revision", "1")) >= 2,
        )

    async def _smoke_check(self, artifact: Artifact, log: LogSink) -> None:
        """Import predict.py in a locked-down container, as a build step."""
        await log("smoke check: import predict.py in the sandbox\n")
        try:
            worker = await self._start_worker(artifact, check=True)
        except WorkerStartError as err:
            outcome = self._start_failure(err, 0.0)
            tail = "\n".join(part for part in (outcome.traceback, outcome.log) if part)
            raise BuildFailedError(
                f"smoke check failed: {outcome.message}",
                log_tail=tail[-8000:],
                hint="fix predict.py",
            ) from err
        except (DockerError, aiohttp.ClientError, OSError) as err:
            raise BuildFailedError(
                f"smoke check could not start a container: {err}", hint="check the Docker engine"
            ) from err
        await worker.kill()

    def warm_workers(self) -> dict[str, tuple[int, int]]:
        """Live workers per artifact reference: (idle, busy)."""
        return self._pool.warm_workers()

    @property
    def live_workers(self) -> int:
        """Worker containers currently alive (idle or busy)."""
        return self._pool.live

    async def run_job(self, artifact: Artifact, job: JobSpec) -> JobOutcome:
        safe_component(job.job_id, "job_id")  # it names a directory
        if job.job_id in self._running:
            raise ValueError(f"job {job.job_id} is already running")
        canceled = self._running[job.job_id] = asyncio.Event()
        try:
            return await self._run(artifact, job, canceled)
        finally:
            self._running.pop(job.job_id, None)

    async def _run(self, artifact: Artifact, job: JobSpec, canceled: asyncio.Event) -> JobOutcome:
        key = artifact.reference
        started = time.perf_counter()
        try:
            worker, fresh = await self._pool.acquire(
                key, lambda: self._start_worker(artifact), owner=job.owner, cancel=canceled
            )
        except AcquireCanceledError:  # while it waited for a slot, or its worker started
            return JobOutcome(
                ok=False, kind="canceled", message="the job was canceled before it started running"
            )
        except WorkerStartError as err:
            return self._start_failure(err, time.perf_counter() - started)
        except PoolClosedError:
            return JobOutcome(ok=False, kind="infrastructure", message="the runtime is closed")
        except (DockerError, aiohttp.ClientError, OSError) as err:
            return JobOutcome(
                ok=False,
                kind="infrastructure",
                message=f"could not start a worker container: {err}",
            )
        setup_s = time.perf_counter() - started if fresh else 0.0
        reuse = False
        try:
            if canceled.is_set():  # canceled while waiting for a worker
                reuse = True
                return JobOutcome(ok=False, kind="canceled", message="the job was canceled")
            outcome = await self._serve(worker, job, canceled, setup_s)
            reuse = outcome.ok or outcome.kind == "model_error"
            return outcome
        finally:
            await self._pool.release(key, worker, owner=job.owner, reuse=reuse and worker.alive)

    async def _serve(
        self, worker: ContainerWorker, job: JobSpec, canceled: asyncio.Event, setup_s: float
    ) -> JobOutcome:
        files = worker.files
        try:
            request = await files.prepare(job)
        except OSError as err:
            return JobOutcome(
                ok=False,
                kind="infrastructure",
                setup_s=setup_s,
                message=f"could not prepare the job's files: {err}",
            )
        begun, started_at = time.perf_counter(), time.monotonic()
        answer = await self._exchange(worker, request, job, canceled)
        run_s = time.perf_counter() - begun
        if isinstance(answer, JobResponse):
            outcome = from_response(answer, memory_limit_mb=self._config.memory_mb)
        else:
            outcome = answer
        harvest = worker.alive and outcome.ok
        paused = False
        if worker.alive and isinstance(answer, JobResponse) and answer.left_running:
            if await asyncio.to_thread(files.has_outputs):
                # What the model left running could change out/ while it is read and
                # emptied: the container is paused until then (or, if it cannot be,
                # ends, and the next job gets a fresh worker).
                paused = await worker.pause()
                if not paused:
                    await worker.terminate()
        try:
            return await self._collect(worker, job, outcome, harvest, started_at, setup_s, run_s)
        finally:
            if paused:
                try:
                    await files.cleared()
                finally:
                    await worker.unpause()

    async def _collect(
        self,
        worker: ContainerWorker,
        job: JobSpec,
        outcome: JobOutcome,
        harvest: bool,
        started_at: float,
        setup_s: float,
        run_s: float,
    ) -> JobOutcome:
        """The job's outcome with its log and, when `harvest`, its outputs, read from
        the worker's folder, which is emptied for the next job."""
        files = worker.files
        limit = self._config.log_limit_bytes
        outputs: list[OutputCopy] = []
        try:
            if harvest:
                log, outputs = await files.harvest(
                    job.output_dir,
                    limit,
                    limits=job.output_limits,
                    deadline=harvest_deadline(started_at, job.timeout_s),
                    uid=self._limits.host_uid,
                )
            elif worker.alive:
                try:
                    log, _ = await files.harvest(None, limit, limits=job.output_limits)
                except HarvestError:  # the model failed and left too much to clear
                    await worker.terminate()
                    log = await asyncio.to_thread(read_tail, files.log, limit)
            else:  # killed or dead: its directory goes with it
                log = await asyncio.to_thread(read_tail, files.log, limit)
        except HarvestError as err:  # not ok: the worker is not reused
            return JobOutcome(
                ok=False,
                kind=harvest_failure_kind(err),
                message=err.message,
                setup_s=setup_s,
                run_s=run_s,
                log=await asyncio.to_thread(read_tail, files.log, limit),
            )
        except OSError as err:  # not ok: the worker is not reused
            return JobOutcome(
                ok=False,
                kind="infrastructure",
                setup_s=setup_s,
                message=f"could not collect the job's outputs: {err}",
            )
        return msgspec.structs.replace(
            outcome, log=log, outputs=tuple(outputs), setup_s=setup_s, run_s=run_s
        )

    async def _exchange(
        self, worker: ContainerWorker, request: JobRequest, job: JobSpec, canceled: asyncio.Event
    ) -> JobResponse | JobOutcome:
        talk = asyncio.create_task(worker.channel.request(request))
        stop = asyncio.create_task(canceled.wait())
        try:
            done, _ = await asyncio.wait(
                {talk, stop}, timeout=job.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if talk in done:
                return talk.result()
        except ProtocolError:  # the stream ended: the container died under the job
            death = container_death(await worker.exit_state(), worker.stderr_tail)
            await worker.terminate()
            return from_death(death, memory_limit_mb=self._config.memory_mb)
        except BaseException:
            await worker.terminate()
            raise
        finally:
            stop.cancel()
            if not talk.done():
                talk.cancel()
        await worker.terminate()
        with contextlib.suppress(asyncio.CancelledError, ProtocolError):
            await talk
        if canceled.is_set():
            return JobOutcome(ok=False, kind="canceled", message="the job was canceled")
        return job_timeout(job.timeout_s)

    def _start_failure(self, err: WorkerStartError, elapsed: float) -> JobOutcome:
        """A worker that did not start: import or setup() failed, it timed out, or its
        container died."""
        if err.ready is not None:
            outcome = from_ready(err.ready, log=err.log)
        elif err.timed_out:
            outcome = setup_timeout(self._config.ready_timeout_s, err.log)
        else:
            death = container_death(err.state, err.stderr)
            outcome = from_death(
                death, memory_limit_mb=self._config.memory_mb, starting=True, log=err.log
            )
        return msgspec.structs.replace(outcome, setup_s=elapsed)

    async def cancel_job(self, job_id: str) -> bool:
        event = self._running.get(job_id)
        if event is None:
            return False
        event.set()
        return True

    async def close(self) -> None:
        """Stop every worker, then remove any container of this runtime that is left
        (e.g. one whose creation was interrupted before it joined the pool)."""
        try:
            await self._pool.close()
            filters = msgspec.json.encode({"label": [f"{LABEL_INSTANCE}={self._instance}"]})
            with contextlib.suppress(DockerError, aiohttp.ClientError, OSError):
                for container in await self._docker.containers.list(
                    all=1, filters=filters.decode()
                ):
                    with contextlib.suppress(DockerError):
                        await container.delete(force=True)
        finally:
            await self._docker.close()

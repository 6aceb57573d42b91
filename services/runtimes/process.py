"""The `process` runtime: a virtualenv per requirements set, warm workers under bubblewrap.

See services/runtimes/_sandbox.py for what the sandbox contains and how it is limited.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import msgspec

from events import ClinaiError
from services.runtimes import _build
from services.runtimes._framing import JobResponse, ProtocolError, WorkerChannel
from services.runtimes._freeze import Frozen
from services.runtimes._harvest import HarvestError, harvest_deadline, harvest_failure_kind
from services.runtimes._jobdir import JobFiles, read_tail
from services.runtimes._outcomes import (
    WorkerDeath,
    from_death,
    from_ready,
    from_response,
    job_timeout,
    setup_timeout,
)
from services.runtimes._outcomes import fail as _fail
from services.runtimes._pip import PipOptions
from services.runtimes._pool import AcquireCanceledError, PoolClosedError, WorkerPool
from services.runtimes._sandbox import (
    SANDBOX_ENV,
    SANDBOX_JOB_ROOT,
    SANDBOX_LIB,
    SANDBOX_PACKAGE,
    BwrapLaunch,
    SandboxSpec,
    bwrap_launch,
    limits_preexec,
    sandbox_env,
)
from services.runtimes._seccomp import bpf_program
from services.runtimes._uids import UidRange, claim_uid_range
from services.runtimes._worker import ProcessWorker
from services.runtimes.base import (
    Artifact,
    BuildFailedError,
    JobOutcome,
    JobSpec,
    LogSink,
    RuntimeUnavailableError,
    SandboxRuntimeError,
)

__all__ = ["ProcessRuntime", "ProcessRuntimeConfig"]

_INSTALL_HINT = (
    "install bubblewrap: `apt-get install bubblewrap` "
    "(or `python -m services.embedded.sandbox_setup`)"
)


class ProcessRuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    work_root: str  # environments, artifacts and worker directories live here
    python: str = sys.executable  # the interpreter environments are made from
    index_url: str = "https://pypi.org/simple"
    extra_index_url: str | None = None
    ca_bundle: str | None = None  # None: Debian's bundle if present, else pip's own
    wheel_cache_dir: str | None = None  # None: <work_root>/wheel-cache
    memory_limit_mb: int = 1024  # RLIMIT_AS of each worker
    max_processes: int = 64  # RLIMIT_NPROC of each worker's own uid (when run as root)
    cpu_time_limit_s: int | None = 3600  # RLIMIT_CPU over a worker's whole life
    max_file_mb: int | None = 1024  # RLIMIT_FSIZE: caps every file a worker writes (logs too)
    idle_timeout_s: float = 300.0
    setup_timeout_s: float = 120.0  # worker start + import + setup(): then "setup_timeout"
    build_timeout_s: float = 1800.0
    max_workers_per_version: int = 2
    max_workers_total: int = 8
    tmp_size_mb: int = 256
    # Workers use max_workers_total + 16 uids from the first free range at or above
    # sandbox_uid_base (a multiple of 8), held with a lock in uid_lock_dir (see _uids).
    sandbox_uid_base: int = 62000
    uid_lock_dir: str = "/run/clinai"
    log_tail_bytes: int = 64 * 1024
    bwrap: str = "bwrap"
    unsafe_no_sandbox: bool = False


class _StartFailed(ClinaiError):
    def __init__(self, outcome: JobOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


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
        self._as_root = os.geteuid() == 0
        self._runner_lib: Path | None = None
        self._found_tools: tuple[str, str | None] | None = None
        self._seccomp: bytes | None = None  # the workers' compiled filter, built once
        self._uid_range: UidRange | None = None  # claimed with the first worker
        self._free_uids: list[int] = []

    # -- availability ------------------------------------------------------------------

    @property
    def sandboxed(self) -> bool:
        return not self._config.unsafe_no_sandbox

    @property
    def live_workers(self) -> int:
        """Workers currently alive (idle or busy)."""
        return self._pool.live

    def _tools(self) -> tuple[str, str | None]:
        """bwrap and setpriv, looked up on PATH once they are found (the check runs
        before every job: a PATH search per job costs dozens of stat calls)."""
        if self._found_tools is None:
            self._found_tools = self._find_tools()
        return self._found_tools

    def _find_tools(self) -> tuple[str, str | None]:
        bwrap = shutil.which(self._config.bwrap)
        if bwrap is None:
            raise RuntimeUnavailableError(
                f"bubblewrap ({self._config.bwrap!r}) was not found: the process runtime needs it "
                "to sandbox models",
                hint=f"{_INSTALL_HINT}, or set unsafe_no_sandbox=True "
                "on a trusted development machine only",
            )
        setpriv = shutil.which("setpriv")
        if self._as_root and setpriv is None:
            raise RuntimeUnavailableError(
                "setpriv was not found: running as root, workers must drop to an unprivileged uid",
                hint="`apt-get install util-linux`",
            )
        return bwrap, setpriv

    # -- build -------------------------------------------------------------------------

    async def build(
        self, *, package_dir: Path, package_hash: str, requirements_hash: str, log: LogSink
    ) -> Artifact:
        if self.sandboxed:
            self._tools()
        _build.safe_component(package_hash, "package_hash")
        _build.safe_component(requirements_hash, "requirements_hash")
        config = self._config
        pip = await PipOptions.with_host_ca(
            index_url=config.index_url,
            extra_index_urls=(config.extra_index_url,) if config.extra_index_url else (),
            ca_bundle=Path(config.ca_bundle) if config.ca_bundle else None,
        )
        lock = self._build_locks.setdefault(requirements_hash, asyncio.Lock())
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
        )
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
            worker = await self._start_worker(artifact, check=True)
        except _StartFailed as err:
            tail = "\n".join(part for part in (err.outcome.traceback, err.outcome.log) if part)
            raise BuildFailedError(
                f"smoke check failed: {err.outcome.message}",
                log_tail=tail[-8000:],
                hint="fix predict.py",
            ) from err
        await worker.kill()
        await log("build finished\n")
        return artifact

    # -- workers -----------------------------------------------------------------------

    @property
    def sandbox_uids(self) -> range | None:
        """The uids this runtime's workers run as (held by no other runtime on the
        host); None until the first worker starts, or when workers keep our own uid."""
        return None if self._uid_range is None else self._uid_range.uids

    def claim_uids(self) -> range | None:
        """Claim this runtime's uid range now (else the first worker does); None when
        workers do not drop to their own uids (not root, or not sandboxed)."""
        if not (self._as_root and self.sandboxed):
            return None
        if self._uid_range is None:
            self._uid_range = claim_uid_range(
                first=self._config.sandbox_uid_base,
                count=self._config.max_workers_total + 16,
                lock_dir=Path(self._config.uid_lock_dir),
            )
            self._free_uids = list(self._uid_range.uids)
        return self._uid_range.uids

    def _take_uid(self) -> int | None:
        if self.claim_uids() is None:
            return None
        if not self._free_uids:
            raise SandboxRuntimeError("no free sandbox uid", hint="raise max_workers_total")
        return self._free_uids.pop(0)

    async def _start_worker(self, artifact: Artifact, *, check: bool = False) -> ProcessWorker:
        config = self._config
        try:
            venv, base_prefix = artifact.details["venv"], artifact.details["base_prefix"]
        except KeyError as err:
            raise _StartFailed(_fail("infrastructure", f"artifact is missing {err}")) from err
        if self._runner_lib is None:
            self._runner_lib = await asyncio.to_thread(_build.ensure_runner_lib, self._root / "lib")
        lib = self._runner_lib
        if self.sandboxed and self._seccomp is None:
            self._seccomp = await asyncio.to_thread(bpf_program)
        uid = self._take_uid()
        directory = self._root / "workers" / uuid.uuid4().hex
        directory.mkdir(parents=True)
        os.chmod(directory, 0o755)
        (directory / "setup.log").touch()
        if uid is not None:
            os.chown(directory / "setup.log", uid, uid)
        if self.sandboxed:
            bwrap, setpriv = self._tools()
            job_root = SANDBOX_JOB_ROOT
            spec = SandboxSpec(
                bwrap=bwrap,
                setpriv=setpriv,
                venv=venv,
                runner_lib=str(lib),
                package=artifact.reference,
                job_root=str(directory),
                base_prefix=base_prefix,
                uid=uid,
                tmp_size_mb=config.tmp_size_mb,
            )
            runner = [
                f"{SANDBOX_ENV}/bin/python",
                "-m",
                "runner",
                *(["--check"] if check else []),
                "--sandboxed",
                "--log",
                f"{job_root}/setup.log",
                SANDBOX_PACKAGE,
            ]
            if self._seccomp is None:
                raise RuntimeError("the seccomp filter is built before the first worker")
            launch = bwrap_launch(spec, runner, seccomp=self._seccomp)
            argv, env, cwd = launch.argv, sandbox_env(python_path=SANDBOX_LIB), None
        else:
            job_root = str(directory)
            argv = [
                f"{venv}/bin/python",
                "-m",
                "runner",
                "--log",
                f"{job_root}/setup.log",
                artifact.reference,
            ]
            env = sandbox_env(python_path=str(lib), home=str(directory))
            env["PATH"] = f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"
            cwd = str(lib)
            launch = BwrapLaunch(argv, ())
            if check:
                argv.insert(argv.index("runner") + 1, "--check")
        preexec = limits_preexec(
            memory_mb=config.memory_limit_mb,
            max_processes=config.max_processes if uid is not None else None,
            cpu_time_s=config.cpu_time_limit_s,
            max_file_mb=config.max_file_mb,
        )

        def release_uid() -> None:
            if uid is not None:
                self._free_uids.append(uid)

        started = time.perf_counter()
        try:
            files = JobFiles.make(directory, job_root, uid)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=launch.fds,
            )
        except BaseException as err:  # canceled too: the job was, while its worker started
            release_uid()
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(err, OSError):
                message = f"could not start a worker: {err}"
                raise _StartFailed(_fail("infrastructure", message)) from err
            raise
        finally:
            launch.close()  # the child has its own copies
        if proc.stdout is None or proc.stdin is None:
            raise RuntimeError("stdin/stdout are not pipes")
        worker = ProcessWorker(
            proc=proc,
            channel=WorkerChannel(proc.stdout, proc.stdin),
            directory=directory,
            files=files,
            uid=uid,
            sandboxed=self.sandboxed,
            on_cleanup=release_uid,
        )
        try:
            ready = await asyncio.wait_for(worker.channel.ready(), config.setup_timeout_s)
        except (ProtocolError, TimeoutError) as err:
            outcome = await self._start_failure(worker, err)
            await worker.kill()
            raise _StartFailed(outcome) from err
        except BaseException:
            await worker.kill()
            raise
        worker.setup_s = time.perf_counter() - started
        if not ready.ok:
            log = read_tail(directory / "setup.log", config.log_tail_bytes)
            await worker.kill()
            raise _StartFailed(from_ready(ready, log=log))
        return worker

    async def _start_failure(self, worker: ProcessWorker, err: BaseException) -> JobOutcome:
        log = read_tail(worker.directory / "setup.log", self._config.log_tail_bytes)
        if isinstance(err, TimeoutError):
            return setup_timeout(self._config.setup_timeout_s, log)
        # bwrap/setpriv/interpreter failures print to stderr before the runner redirects it.
        death = await self._death(worker, stderr=await worker.stderr_tail())
        return from_death(
            death, memory_limit_mb=self._config.memory_limit_mb, starting=True, log=log
        )

    async def _death(self, worker: ProcessWorker, *, stderr: str = "") -> WorkerDeath:
        status, signo = await worker.exit_status()
        # A SIGKILL the runtime did not send: most likely the out-of-memory killer.
        oom = signo == signal.SIGKILL and not worker.killed_by_host
        return WorkerDeath(status=status, signo=signo, oom_killed=oom, stderr=stderr)

    # -- jobs ----------------------------------------------------------------------------

    async def run_job(self, artifact: Artifact, job: JobSpec) -> JobOutcome:
        _build.safe_component(job.job_id, "job_id")
        if self.sandboxed:
            self._tools()
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
                key, lambda: self._start_worker(artifact), owner=job.owner, cancel=running.canceled
            )
        except AcquireCanceledError:
            return _fail("canceled", "the job was canceled before it started running")
        except _StartFailed as err:
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
        death = await self._death(worker)
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
        if self._uid_range is not None:  # every worker is dead: the range is free
            self._uid_range.release()
            self._uid_range = None

"""How the process runtime starts a worker: the host tools it needs (bubblewrap,
setpriv), the uid range its workers run as, the worker's folder, the sandbox's command
line and limits, and the wait for its `ready` (import and setup()).
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
from services.runtimes._framing import ProtocolError, WorkerChannel
from services.runtimes._jobdir import JobFiles, read_tail
from services.runtimes._outcomes import WorkerDeath, from_death, from_ready, setup_timeout
from services.runtimes._outcomes import fail as _fail
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
    JobOutcome,
    RuntimeUnavailableError,
    SandboxRuntimeError,
)

__all__ = ["ProcessRuntimeConfig", "StartFailedError", "WorkerLauncher", "worker_death"]

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


class StartFailedError(ClinaiError):
    """A worker did not get to `ready`; `outcome` says why, as the job's outcome."""

    def __init__(self, outcome: JobOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class WorkerLauncher:
    def __init__(self, config: ProcessRuntimeConfig) -> None:
        self._config = config
        self._root = Path(config.work_root)
        self._as_root = os.geteuid() == 0
        self._runner_lib: Path | None = None
        self._found_tools: tuple[str, str | None] | None = None
        self._seccomp: bytes | None = None  # the workers' compiled filter, built once
        self._uid_range: UidRange | None = None  # claimed with the first worker
        self._free_uids: list[int] = []

    @property
    def sandboxed(self) -> bool:
        return not self._config.unsafe_no_sandbox

    def tools(self) -> tuple[str, str | None]:
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

    async def seccomp(self) -> bytes:
        """The workers' compiled seccomp filter, built once."""
        if self._seccomp is None:
            self._seccomp = await asyncio.to_thread(bpf_program)
        return self._seccomp

    def take_uid(self) -> int | None:
        """A free uid of the runtime's range (None: we keep our own); give it back
        with `give_back_uid`."""
        return self._take_uid()

    def give_back_uid(self, uid: int | None) -> None:
        if uid is not None:
            self._free_uids.append(uid)

    def _take_uid(self) -> int | None:
        if self.claim_uids() is None:
            return None
        if not self._free_uids:
            raise SandboxRuntimeError("no free sandbox uid", hint="raise max_workers_total")
        return self._free_uids.pop(0)

    async def start(self, artifact: Artifact, *, check: bool = False) -> ProcessWorker:
        config = self._config
        try:
            venv, base_prefix = artifact.details["venv"], artifact.details["base_prefix"]
        except KeyError as err:
            raise StartFailedError(_fail("infrastructure", f"artifact is missing {err}")) from err
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
            bwrap, setpriv = self.tools()
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
                raise StartFailedError(_fail("infrastructure", message)) from err
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
            raise StartFailedError(outcome) from err
        except BaseException:
            await worker.kill()
            raise
        worker.setup_s = time.perf_counter() - started
        if not ready.ok:
            log = read_tail(directory / "setup.log", config.log_tail_bytes)
            await worker.kill()
            raise StartFailedError(from_ready(ready, log=log))
        return worker

    async def _start_failure(self, worker: ProcessWorker, err: BaseException) -> JobOutcome:
        log = read_tail(worker.directory / "setup.log", self._config.log_tail_bytes)
        if isinstance(err, TimeoutError):
            return setup_timeout(self._config.setup_timeout_s, log)
        # bwrap/setpriv/interpreter failures print to stderr before the runner redirects it.
        death = await worker_death(worker, stderr=await worker.stderr_tail())
        return from_death(
            death, memory_limit_mb=self._config.memory_limit_mb, starting=True, log=log
        )

    def release_uids(self) -> None:
        """Every worker is dead: the uid range goes back to the host."""
        if self._uid_range is not None:
            self._uid_range.release()
            self._uid_range = None


async def worker_death(worker: ProcessWorker, *, stderr: str = "") -> WorkerDeath:
    """How a worker ended, as the shared outcome mapping takes it."""
    status, signo = await worker.exit_status()
    # A SIGKILL the runtime did not send: the out-of-memory killer if it ran meanwhile,
    # else the model's own (`os.kill(0, SIGKILL)`), a crash like any other.
    oom = signo == signal.SIGKILL and not worker.killed_by_host and worker.oom_killer_ran()
    return WorkerDeath(status=status, signo=signo, oom_killed=oom, stderr=stderr)

"""The runtime port: turns an unpacked model package into a runnable artifact and
runs jobs on warm workers. Every adapter (process, docker) passes one contract suite
(tests/runtimes/test_contract.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from events import ClinaiError
from events.catalogue import FailureKind  # the kinds a JobFailed records: one list

__all__ = [
    "Artifact",
    "BuildFailedError",
    "FailureKind",
    "JobOutcome",
    "JobSpec",
    "LogSink",
    "OutputCopy",
    "OutputLimits",
    "Runtime",
    "RuntimeUnavailableError",
    "SandboxRuntimeError",
]

# Receives build output as it is produced (already decoded, may hold several lines).
LogSink = Callable[[str], Awaitable[None]]


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    """What a build produced; stored in `VersionBuilt` and handed back to `start_job`."""

    runtime: str  # "process" | "docker"
    reference: str  # process: path of the built environment; docker: image id or digest ref
    package_hash: str
    details: dict[str, str] = {}


class OutputLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What a job may leave in its output folder; more fails it with kind `output_limit`.
    Each is a setting (named in the failure's message)."""

    max_files: int = 1000  # entries of any kind (files, folders, links) in the whole tree
    max_file_bytes: int = 256 * 1024 * 1024  # one file's apparent size (st_size)
    max_total_bytes: int = 1024 * 1024 * 1024  # all files' apparent sizes together


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    version_id: str
    # Whose job it is: a warm worker serves the jobs of one owner only (it keeps module
    # globals, threads and files from job to job). Jobs with the same owner share workers.
    owner: str = ""
    # Host path of the input file (run(input_path, output_dir)); the runtime links or
    # copies it in. None for a typed run(), whose files are `files`.
    input_path: Path | None = None
    input_name: str = ""  # its file name for the model; "" means input_path's name
    output_dir: Path  # existing host folder for a copy of each file the model wrote
    params: dict[str, Any] = {}
    # A typed run(): its inputs by name (set: run is called with them), each of
    # `file_params` holding a name (or a list of names) from `files`: (name in the
    # input folder, host path), each linked or copied in like `input_path`.
    inputs: dict[str, Any] | None = None
    file_params: tuple[str, ...] = ()
    files: tuple[tuple[str, Path], ...] = ()
    timeout_s: float = 60.0
    output_limits: OutputLimits = OutputLimits()

    @property
    def file_name(self) -> str:
        return self.input_name or (self.input_path.name if self.input_path is not None else "")

    def staged(self) -> tuple[tuple[str, Path], ...]:
        """Every input file: (its name in the input folder, its host path)."""
        if self.input_path is not None:
            return ((self.file_name, self.input_path), *self.files)
        return self.files


class OutputCopy(msgspec.Struct, frozen=True):
    name: str  # the file's path relative to the model's output folder
    path: Path  # the runtime's copy, in `JobSpec.output_dir`; the caller's to keep or remove


class JobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    result: dict[str, Any] | None = None
    outputs: tuple[OutputCopy, ...] = ()  # when ok: every file the model wrote
    kind: FailureKind | None = None  # set when not ok
    message: str = ""  # what happened and what to do, for the user
    traceback: str | None = None
    log: str = ""  # what the model printed during the job (bounded)
    setup_s: float = 0.0  # time spent starting a worker and running setup(); 0 when warm
    run_s: float = 0.0


class SandboxRuntimeError(ClinaiError):
    """Base of the runtime errors. `hint` says what the caller or operator can do."""


class BuildFailedError(SandboxRuntimeError):
    """The package could not be built; `log_tail` holds the last lines of the failing step."""

    def __init__(self, message: str, *, log_tail: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail


class RuntimeUnavailableError(SandboxRuntimeError):
    """The runtime cannot work on this host (no bubblewrap, no Docker engine, ...)."""


class Runtime(Protocol):
    name: str

    async def build(
        self, *, package_dir: Path, package_hash: str, requirements_hash: str, log: LogSink
    ) -> Artifact:
        """Build (or reuse) an artifact for the unpacked package at `package_dir`.
        Raises BuildFailedError with the failing step's last lines."""
        ...

    async def has_artifact(self, artifact: Artifact) -> bool:
        """Whether this host can run `artifact` as recorded (built here, on a folder
        shared with its builder, or pullable); False: rebuild it from its package."""
        ...

    async def run_job(self, artifact: Artifact, job: JobSpec) -> JobOutcome:
        """Run one job on a warm worker of this artifact (starting one if needed).
        Never raises for model failures: they come back as a JobOutcome with a kind.
        Enforces job.timeout_s by killing the worker."""
        ...

    async def cancel_job(self, job_id: str) -> bool:
        """Stop a running job within a second (kill its worker); True if it was running.
        The pending run_job call then returns kind="canceled"."""
        ...

    def warm_workers(self) -> Mapping[str, tuple[int, int]]:
        """Live workers per artifact reference: (idle, busy). For metrics: no I/O."""
        ...

    async def close(self) -> None:
        """Stop every worker."""
        ...

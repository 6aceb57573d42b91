"""How the runtime's failures map to a JobOutcome's kind and message."""

from __future__ import annotations

from typing import Any

import msgspec

from services.runtimes._docker_worker import WorkerStartError
from services.runtimes._framing import JobResponse
from services.runtimes._outcomes import setup_timeout
from services.runtimes._worker import describe_exit
from services.runtimes.base import FailureKind, JobOutcome

__all__ = ["death_outcome", "response_outcome", "start_failure_outcome"]


def death_outcome(
    state: dict[str, Any], *, memory_mb: int, stderr: str, log: str, setup_s: float = 0.0
) -> JobOutcome:
    """The outcome of a job whose container died under it, from the container's State
    ({} when the engine could not tell: then it is the infrastructure's fault)."""
    kind: FailureKind
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        kind = "out_of_memory"
        message = (
            f"the model ran out of memory (limit {memory_mb} MB) and was killed; "
            "use less memory or ask for a larger limit"
        )
    elif code == 128 + 9 and not state.get("Running"):
        # The runner is PID 1 of the container: nothing inside can SIGKILL it, only the
        # kernel's OOM killer (handled above) or someone outside (docker kill, engine).
        kind = "infrastructure"
        message = "the worker container was killed from outside (docker kill? engine restart?)"
    elif state and not state.get("Running") and isinstance(code, int):
        kind = "crashed"
        status, _ = describe_exit(code, sandboxed=True)
        message = f"the worker died during the job ({status})"
        if stderr.strip():
            message += "\n" + stderr.strip()[-2000:]
    else:
        kind = "infrastructure"
        message = "the worker container disappeared or the Docker engine failed; retry the job"
    return JobOutcome(ok=False, kind=kind, message=message, log=log, setup_s=setup_s)


def start_failure_outcome(
    err: WorkerStartError, elapsed: float, *, memory_mb: int, setup_timeout_s: float
) -> JobOutcome:
    """The outcome of a job whose worker did not start: import or setup() failed, it
    timed out, or its container died."""
    ready = err.ready
    if ready is not None:
        if ready.stage == "setup":
            message = f"setup() raised {ready.error_type}: {ready.message}"
        elif ready.stage == "import":
            message = f"predict.py could not be imported: {ready.error_type}: {ready.message}"
        else:
            message = ready.message
        kind: FailureKind = "out_of_memory" if ready.error_type == "MemoryError" else "model_error"
        return JobOutcome(
            ok=False,
            kind=kind,
            message=message,
            traceback=ready.traceback,
            log=err.log,
            setup_s=elapsed,
        )
    if err.timed_out:
        return msgspec.structs.replace(setup_timeout(setup_timeout_s, err.log), setup_s=elapsed)
    outcome = death_outcome(
        err.state, memory_mb=memory_mb, stderr=err.stderr, log=err.log, setup_s=elapsed
    )
    return msgspec.structs.replace(outcome, message="while starting: " + outcome.message)


def response_outcome(resp: JobResponse, *, memory_mb: int) -> JobOutcome:
    """The outcome of a job the worker answered."""
    if resp.ok:
        return JobOutcome(ok=True, result=resp.result)
    if resp.error_type == "MemoryError":
        return JobOutcome(
            ok=False,
            kind="out_of_memory",
            traceback=resp.traceback,
            message=f"the model ran out of memory (limit {memory_mb} MB)",
        )
    if resp.error_type == "ResultTooLarge":
        return JobOutcome(ok=False, kind="output_limit", message=resp.message)
    if resp.error_type == "InvalidResult" or not resp.error_type:
        return JobOutcome(
            ok=False, kind="model_error", message=resp.message, traceback=resp.traceback
        )
    return JobOutcome(
        ok=False,
        kind="model_error",
        traceback=resp.traceback,
        message=f"run() raised {resp.error_type}: {resp.message}",
    )

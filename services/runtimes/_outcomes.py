"""How every runtime (process, docker) turns what a worker said, or how it died, into a
JobOutcome with a failure kind: one mapping, pure functions. Each adapter only gathers
the evidence (a response, a Ready frame, a `WorkerDeath`)."""

from __future__ import annotations

import errno
import signal

import msgspec

from services.runtimes._framing import JobResponse, Ready
from services.runtimes.base import FailureKind, JobOutcome

__all__ = [
    "WorkerDeath",
    "fail",
    "from_death",
    "from_ready",
    "from_response",
    "job_timeout",
    "setup_timeout",
]


_SETUP_TAIL_CHARS = 2000  # of the setup log, in a setup_timeout's message
_STDERR_TAIL_CHARS = 2000  # of what a dying worker printed, in the message
_EFBIG = f"[Errno {errno.EFBIG}]"  # how str(OSError) begins for "File too large"


class WorkerDeath(msgspec.Struct, frozen=True, kw_only=True):
    """What a runtime could tell of a worker that died under a job or while starting."""

    status: str | None  # "exit code 3", "killed by SIGSEGV"; None: unknown (engine failed)
    signo: int | None = None  # the signal that ended it, if any
    oom_killed: bool = False  # the kernel's out-of-memory killer ended it
    killed_outside: bool = False  # killed by someone else than the runtime (docker kill)
    stderr: str = ""  # what it printed before the runner took its output over


def fail(kind: FailureKind, message: str, **fields: object) -> JobOutcome:
    return msgspec.structs.replace(JobOutcome(ok=False, kind=kind, message=message), **fields)


def from_response(response: JobResponse, *, memory_limit_mb: int, log: str = "") -> JobOutcome:
    if response.ok:
        return JobOutcome(ok=True, result=response.result, log=log, run_s=response.duration_s)
    fields: dict[str, object] = {
        "traceback": response.traceback,
        "log": log,
        "run_s": response.duration_s,
    }
    if response.error_type == "MemoryError":
        message = f"the model ran out of memory (limit {memory_limit_mb} MB)"
        return fail("out_of_memory", message, **fields)
    if response.error_type in ("InvalidResult", "", None):
        return fail("model_error", response.message, **fields)
    if response.error_type == "ResultTooLarge":
        return fail("output_limit", response.message, **fields)
    if response.error_type == "OSError" and response.message.startswith(_EFBIG):
        # RLIMIT_FSIZE: a file (a 2 GB sparse output, say) over the worker's file size limit
        message = (
            f"run() raised OSError: {response.message}: a worker cannot write a file that "
            "large, and an output may be at most CLINAI_MAX_OUTPUT_FILE_BYTES"
        )
        return fail("output_limit", message, **fields)
    message = f"run() raised {response.error_type}: {response.message}"
    return fail("model_error", message, **fields)


def from_death(
    death: WorkerDeath,
    *,
    memory_limit_mb: int,
    cpu_time_limit_s: int | None = None,
    starting: bool = False,
    log: str = "",
    run_s: float = 0.0,
) -> JobOutcome:
    """A worker that died during a job without being canceled, or while it started
    (`starting`: before it said it was ready)."""
    fields: dict[str, object] = {"log": log, "run_s": run_s}
    stage = "while loading predict.py" if starting else "during the job"
    if death.oom_killed:
        message = (
            f"the worker was killed by the out-of-memory killer {stage} (memory limit "
            f"{memory_limit_mb} MB): use less memory, or ask for a larger limit"
        )
        return fail("out_of_memory", message, **fields)
    if death.signo == signal.SIGXCPU:
        limit = "" if cpu_time_limit_s is None else f" ({cpu_time_limit_s} s)"
        message = f"the worker used up its CPU-time limit{limit}"
        return fail("timeout", message, **fields)
    if death.killed_outside:
        message = "the worker was killed from outside the runtime (docker kill? engine restart?)"
        return fail("infrastructure", message, **fields)
    if death.status is None:
        message = "the worker disappeared or its engine failed; retry the job"
        return fail("infrastructure", message, **fields)
    stderr = death.stderr.strip()[-_STDERR_TAIL_CHARS:]
    if starting and stderr:  # the sandbox or the interpreter failed, before the runner ran
        message = f"the worker could not start ({death.status}): {stderr}"
        return fail("infrastructure", message, **fields)
    message = f"the worker died {stage} ({death.status})"
    return fail("crashed", f"{message}\n{stderr}" if stderr else message, **fields)


def from_ready(ready: Ready, *, log: str) -> JobOutcome:
    """A worker whose handshake reported an import or setup() failure."""
    if ready.stage == "setup":
        message = f"setup() raised {ready.error_type}: {ready.message}"
    elif ready.stage == "import":
        message = f"predict.py could not be imported: {ready.error_type}: {ready.message}"
    else:
        message = ready.message
    kind: FailureKind = "out_of_memory" if ready.error_type == "MemoryError" else "model_error"
    return fail(kind, message, traceback=ready.traceback, log=log)


def job_timeout(timeout_s: float, *, log: str = "", run_s: float = 0.0) -> JobOutcome:
    """A job that ran past its timeout; its worker was stopped."""
    message = f"the job did not finish within its timeout of {timeout_s:g} s and was stopped"
    return fail("timeout", message, log=log, run_s=run_s)


def setup_timeout(limit_s: float, log: str) -> JobOutcome:
    """A worker that did not finish importing predict.py and setup() within `limit_s`;
    the message ends with the last lines it printed meanwhile."""
    message = (
        f"the worker did not finish importing predict.py and running setup() within "
        f"{limit_s:g} s (the operator's CLINAI_SETUP_TIMEOUT_S): make setup() faster, or "
        "load less at start"
    )
    tail = log.strip()[-_SETUP_TAIL_CHARS:]
    if tail:
        message += f"; the end of what it printed:\n{tail}"
    else:
        message += "; it printed nothing"
    return fail("setup_timeout", message, log=log)

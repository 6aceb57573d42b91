"""How the process-based runtimes turn what a worker said (or how it died) into a
JobOutcome with a failure kind. Pure functions; shared with any runtime using the runner."""

from __future__ import annotations

import signal

import msgspec

from services.runtimes._framing import JobResponse, Ready
from services.runtimes.base import FailureKind, JobOutcome

__all__ = ["fail", "from_death", "from_ready", "from_response", "setup_timeout"]


_SETUP_TAIL_CHARS = 2000  # of the setup log, in a setup_timeout's message


def fail(kind: FailureKind, message: str, **fields: object) -> JobOutcome:
    return msgspec.structs.replace(JobOutcome(ok=False, kind=kind, message=message), **fields)


def from_response(response: JobResponse, *, log: str, memory_limit_mb: int) -> JobOutcome:
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
    if response.error_type == "InvalidResult":
        return fail("model_error", response.message, **fields)
    if response.error_type == "ResultTooLarge":
        return fail("output_limit", response.message, **fields)
    message = f"run() raised {response.error_type}: {response.message}"
    return fail("model_error", message, **fields)


def from_death(
    *,
    status: str,
    signo: int | None,
    killed_by_host: bool,
    log: str,
    run_s: float,
    cpu_time_limit_s: int | None,
) -> JobOutcome:
    """The worker died during a job without being canceled."""
    if signo == signal.SIGXCPU:
        message = f"the worker used up its CPU-time limit ({cpu_time_limit_s} s)"
        return fail("timeout", message, log=log, run_s=run_s)
    if signo == signal.SIGKILL and not killed_by_host:
        message = "the worker was killed (SIGKILL), most likely by the out-of-memory killer"
        return fail("out_of_memory", message, log=log, run_s=run_s)
    return fail("crashed", f"the worker died during the job ({status})", log=log, run_s=run_s)


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

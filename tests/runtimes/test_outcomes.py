"""The one outcome mapping of every runtime (services/runtimes/_outcomes.py), and how the
docker runtime reads a dead container's State into its evidence. Pure functions: no
worker is started here (the contract suite shows both adapters reach these outcomes)."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from services.runtimes._docker_worker import container_death
from services.runtimes._framing import JobResponse, Ready
from services.runtimes._outcomes import (
    WorkerDeath,
    from_death,
    from_ready,
    from_response,
    job_timeout,
)


def response(error_type: str | None, message: str = "boom") -> JobResponse:
    return JobResponse(
        type="result",
        job_id="j",
        ok=False,
        error_type=error_type,
        message=message,
        traceback="tb",
        duration_s=0.5,
    )


@pytest.mark.parametrize(
    ("error_type", "kind", "message"),
    [
        ("MemoryError", "out_of_memory", "the model ran out of memory (limit 256 MB)"),
        ("InvalidResult", "model_error", "boom"),
        ("", "model_error", "boom"),
        (None, "model_error", "boom"),
        ("ResultTooLarge", "output_limit", "boom"),
        ("ValueError", "model_error", "run() raised ValueError: boom"),
    ],
)
def test_a_failed_response(error_type: str | None, kind: str, message: str) -> None:
    outcome = from_response(response(error_type), memory_limit_mb=256, log="printed")
    assert (outcome.ok, outcome.kind, outcome.message) == (False, kind, message)
    assert (outcome.traceback, outcome.log, outcome.run_s) == ("tb", "printed", 0.5)


def test_a_failed_ready_frame() -> None:
    ready = Ready(
        type="ready", ok=False, stage="setup", error_type="MemoryError", message="m", traceback="t"
    )
    outcome = from_ready(ready, log="l")
    assert (outcome.kind, outcome.message) == ("out_of_memory", "setup() raised MemoryError: m")


def died(**evidence: Any) -> WorkerDeath:
    return WorkerDeath(**{"status": "exit code 3", **evidence})


@pytest.mark.parametrize(
    ("death", "starting", "kind", "words"),
    [
        (died(oom_killed=True), False, "out_of_memory", "out-of-memory killer during the job"),
        (died(oom_killed=True), True, "out_of_memory", "while loading predict.py"),
        (died(signo=signal.SIGXCPU), False, "timeout", "CPU-time limit (60 s)"),
        (died(killed_outside=True), False, "infrastructure", "killed from outside"),
        (died(status=None), False, "infrastructure", "retry the job"),
        (died(stderr="Fatal Python error"), True, "infrastructure", "could not start"),
        (died(), True, "crashed", "died while loading predict.py (exit code 3)"),
        (died(stderr="Segfault\n"), False, "crashed", "during the job (exit code 3)\nSegfault"),
    ],
)
def test_a_dead_worker(death: WorkerDeath, starting: bool, kind: str, words: str) -> None:
    outcome = from_death(
        death, memory_limit_mb=256, cpu_time_limit_s=60, starting=starting, log="l", run_s=2.0
    )
    assert outcome.kind == kind, outcome
    assert words in outcome.message
    assert (outcome.log, outcome.run_s) == ("l", 2.0)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"OOMKilled": True, "ExitCode": 137}, died(status="killed by SIGKILL", oom_killed=True)),
        (
            {"OOMKilled": False, "ExitCode": 137, "Running": False},
            died(status="killed by SIGKILL", signo=signal.SIGKILL, killed_outside=True),
        ),
        (
            {"ExitCode": 139, "Running": False},
            died(status="killed by SIGSEGV", signo=signal.SIGSEGV),
        ),
        ({"ExitCode": 3, "Running": False}, died()),
        ({"ExitCode": 0, "Running": True}, died(status=None)),
        ({}, died(status=None)),
    ],
)
def test_a_dead_containers_state(state: dict[str, Any], expected: WorkerDeath) -> None:
    assert container_death(state, "") == expected


def test_a_job_past_its_timeout() -> None:
    outcome = job_timeout(1.5, log="l", run_s=1.6)
    assert outcome.kind == "timeout" and "within its timeout of 1.5 s" in outcome.message

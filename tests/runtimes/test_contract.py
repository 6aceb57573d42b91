"""The runtime port's contract: every adapter (conftest.ADAPTERS: process, docker) must
pass it. Hostile packages live in tests/packages/<name>/; after each, the runtime is
still healthy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.runtimes.base import BuildFailedError, Runtime
from tests._infra import outputs_written, wait_until
from tests.runtimes.conftest import (
    SHORT_SETUP_S,
    assert_healthy,
    build,
    make_job,
    setup_printed,
)


async def test_noop_job_and_warm_worker(runtime: Runtime, tmp_path: Path) -> None:
    artifact = await build(runtime, "noop")
    first_job = make_job(tmp_path)
    first = await runtime.run_job(artifact, first_job)
    assert first.ok, first
    assert first.result is not None and first.result["bytes"] == len("some input")
    [copy] = first.outputs
    assert copy.name == "echo.txt" and copy.path.parent == first_job.output_dir
    assert copy.path.read_text() == "some input"
    assert "hello from run" in first.log
    assert first.setup_s > 0

    second = await runtime.run_job(artifact, make_job(tmp_path))
    assert second.ok, second
    assert second.result is not None and first.result is not None
    assert second.result["pid"] == first.result["pid"]  # the same warm worker
    assert second.result["setup_calls"] == 1  # setup() ran once per worker
    assert second.setup_s == 0.0


async def test_exception_is_model_error(runtime: Runtime, tmp_path: Path) -> None:
    outcome = await runtime.run_job(await build(runtime, "raises"), make_job(tmp_path))
    assert not outcome.ok
    assert outcome.kind == "model_error"
    assert "ValueError" in outcome.message and "always fails" in outcome.message
    assert outcome.traceback and "predict.py" in outcome.traceback
    await assert_healthy(runtime, tmp_path)


async def test_timeout(runtime: Runtime, tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = await runtime.run_job(
        await build(runtime, "sleeper"), make_job(tmp_path, timeout_s=1.0)
    )
    assert outcome.kind == "timeout", outcome
    assert time.monotonic() - started < 10
    await assert_healthy(runtime, tmp_path)


async def test_out_of_memory(runtime: Runtime, tmp_path: Path) -> None:
    outcome = await runtime.run_job(await build(runtime, "hog_memory"), make_job(tmp_path))
    assert outcome.kind == "out_of_memory", outcome
    await assert_healthy(runtime, tmp_path)


async def test_fork_bomb_is_contained(runtime: Runtime, tmp_path: Path) -> None:
    outcome = await runtime.run_job(
        await build(runtime, "fork_bomb"), make_job(tmp_path, timeout_s=20.0)
    )
    assert not outcome.ok
    assert outcome.kind in ("model_error", "timeout"), outcome
    if outcome.kind == "model_error":
        assert "fork failed" in outcome.message
    await assert_healthy(runtime, tmp_path)


async def test_no_network(runtime: Runtime, tmp_path: Path) -> None:
    accepted: list[object] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await runtime.run_job(
            await build(runtime, "network"), make_job(tmp_path, port=port)
        )
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.ok, outcome
    assert outcome.result is not None
    for key in ("internet", "loopback", "dns"):
        assert "Error" in outcome.result[key] or "gaierror" in outcome.result[key], outcome.result
    assert accepted == []  # the host's 127.0.0.1 was never reached
    await assert_healthy(runtime, tmp_path)


async def test_cannot_write_outside_output_dir(runtime: Runtime, tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    host_file = host_dir / "pwned.txt"
    outcome = await runtime.run_job(
        await build(runtime, "write_outside"),
        make_job(tmp_path, host_paths=[str(host_file), "/tmp/../pwned-host.txt"]),
    )
    assert outcome.ok, outcome
    assert outcome.result is not None
    attempts = outcome.result["attempts"]
    assert attempts and all(result != "written" for result in attempts.values()), attempts
    assert not host_file.exists()
    assert not (Path("/") / "pwned.txt").exists()
    assert not (Path("/usr") / "pwned.txt").exists()
    await assert_healthy(runtime, tmp_path)


async def test_cannot_read_another_jobs_directory(
    runtime: Runtime, tmp_path: Path, work_root: Path
) -> None:
    artifact = await build(runtime, "snoop")
    writer_job = make_job(tmp_path, mode="write", secret="s3cret", hold_s=60)
    writer = asyncio.create_task(runtime.run_job(artifact, writer_job))
    await wait_until(
        lambda: bool(outputs_written(work_root, "secret.txt")),
        timeout_s=30,
        what="the writer job to run",
    )
    (secret,) = outputs_written(work_root, "secret.txt")
    snooper = await runtime.run_job(
        artifact, make_job(tmp_path, host_paths=[str(writer_job.input_path), str(secret)])
    )
    await wait_until(lambda: runtime.cancel_job(writer_job.job_id), timeout_s=30, what="cancel")
    assert (await writer).kind == "canceled"
    assert snooper.ok, snooper
    assert snooper.result is not None
    assert all(not v.startswith("read:") for v in snooper.result["seen"].values()), snooper.result
    assert snooper.result["out_listing"] == [], snooper.result

    # Sequentially, on the same warm worker: nothing of the finished job is left.
    done = make_job(tmp_path, mode="write", secret="again", hold_s=0)
    assert (await runtime.run_job(artifact, done)).ok
    later_job = make_job(tmp_path)
    later = await runtime.run_job(artifact, later_job)
    assert later.ok and later.result is not None
    assert later.result["out_listing"] == [], later.result
    assert later.result["in_listing"] == [later_job.input_path.name], later.result


async def test_a_warm_worker_serves_one_owner_only(runtime: Runtime, tmp_path: Path) -> None:
    """A public model's worker must not carry one caller's data into another's job."""
    artifact = await build(runtime, "remember")
    first = await runtime.run_job(artifact, make_job(tmp_path, owner="usr_a", secret="a-secret"))
    other = await runtime.run_job(artifact, make_job(tmp_path, owner="usr_b"))
    again = await runtime.run_job(artifact, make_job(tmp_path, owner="usr_a"))
    assert first.ok and other.ok and again.ok, (first, other, again)
    assert first.result is not None and other.result is not None and again.result is not None
    assert other.result["seen"] == [], other.result  # usr_a's module global is not there
    assert other.result["worker"] != first.result["worker"]
    # The same owner's next job still gets the warm worker.
    assert again.result == {"worker": first.result["worker"], "seen": ["a-secret"]}
    assert again.setup_s == 0.0


async def test_loud_model_keeps_protocol_intact(runtime: Runtime, tmp_path: Path) -> None:
    artifact = await build(runtime, "loud")
    outcome = await runtime.run_job(artifact, make_job(tmp_path))
    assert outcome.ok, outcome
    assert outcome.result == {"printed_mb": 5}
    assert len(outcome.log) <= 128 * 1024  # bounded
    assert "the end" in outcome.log
    again = await runtime.run_job(artifact, make_job(tmp_path))
    assert again.ok, again
    await assert_healthy(runtime, tmp_path)


@pytest.mark.parametrize("kind", ["object", "list"])
async def test_non_json_result_is_model_error(runtime: Runtime, tmp_path: Path, kind: str) -> None:
    outcome = await runtime.run_job(
        await build(runtime, "bad_result"), make_job(tmp_path, kind=kind)
    )
    assert outcome.kind == "model_error", outcome
    expected = "not JSON-serialisable" if kind == "object" else "must return a dict"
    assert expected in outcome.message
    await assert_healthy(runtime, tmp_path)


async def test_a_result_larger_than_a_frame_is_output_limit(
    runtime: Runtime, tmp_path: Path
) -> None:
    outcome = await runtime.run_job(
        await build(runtime, "big_result"), make_job(tmp_path, size=17 * 1024 * 1024)
    )
    assert outcome.kind == "output_limit", outcome
    assert "larger than a worker can send" in outcome.message and "output_dir" in outcome.message
    await assert_healthy(runtime, tmp_path)


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("nul", "$.text[1] contains a NUL character (\\u0000)"),
        ("surrogate", "$.text contains a lone surrogate"),
    ],
)
async def test_result_with_text_postgres_cannot_store_is_model_error(
    runtime: Runtime, tmp_path: Path, kind: str, where: str
) -> None:
    outcome = await runtime.run_job(
        await build(runtime, "bad_result"), make_job(tmp_path, kind=kind)
    )
    assert outcome.kind == "model_error", outcome
    assert f"run() returned a result in which {where}, which cannot be stored" in outcome.message
    await assert_healthy(runtime, tmp_path)


@pytest.mark.parametrize("how", ["exit", "segfault", "sigkill"])
async def test_interpreter_crash(runtime: Runtime, tmp_path: Path, how: str) -> None:
    """A model that kills itself with SIGKILL crashed: it was not the out-of-memory
    killer (before, the process runtime said so, and to use less memory)."""
    outcome = await runtime.run_job(await build(runtime, "crash"), make_job(tmp_path, how=how))
    assert outcome.kind == "crashed", outcome
    expected = {"exit": "exit code 3", "segfault": "SIGSEGV", "sigkill": "SIGKILL"}[how]
    if how == "sigkill" and runtime.name == "docker":
        # The worker is its container's pid 1, which a signal from inside cannot end:
        # the model goes on to exit with 3.
        expected = "exit code 3"
    assert expected in outcome.message
    await assert_healthy(runtime, tmp_path)


async def test_cancel_stops_a_running_job_within_a_second(
    runtime: Runtime, tmp_path: Path, work_root: Path
) -> None:
    artifact = await build(runtime, "sleeper")
    job = make_job(tmp_path, timeout_s=60)
    task = asyncio.create_task(runtime.run_job(artifact, job))
    await wait_until(
        lambda: bool(outputs_written(work_root, "started")), timeout_s=30, what="the job to run"
    )
    started = time.monotonic()
    assert await runtime.cancel_job(job.job_id)
    outcome = await task
    assert time.monotonic() - started < 1.0
    assert outcome.kind == "canceled", outcome
    assert not await runtime.cancel_job(job.job_id)
    await assert_healthy(runtime, tmp_path)


async def test_import_error_fails_the_build(runtime: Runtime) -> None:
    with pytest.raises(BuildFailedError) as info:
        await build(runtime, "bad_import")
    assert "smoke check" in info.value.message
    assert "this_module_does_not_exist" in info.value.message + info.value.log_tail


async def test_failing_setup_is_model_error(runtime: Runtime, tmp_path: Path) -> None:
    outcome = await runtime.run_job(await build(runtime, "failing_setup"), make_job(tmp_path))
    assert outcome.kind == "model_error", outcome
    assert "setup()" in outcome.message and "weights not found" in outcome.message
    assert outcome.traceback
    await assert_healthy(runtime, tmp_path)


# ---- the sandbox itself --------------------------------------------------------------


async def test_dangerous_system_calls_are_refused(runtime: Runtime, tmp_path: Path) -> None:
    """Namespaces, mounts, io_uring, the keyring, ptrace, bpf, modules...: each attempt
    fails with EPERM from the seccomp filter (clone3 with ENOSYS, so libc falls back)."""
    outcome = await runtime.run_job(await build(runtime, "syscalls"), make_job(tmp_path))
    assert outcome.ok and outcome.result is not None, outcome
    assert outcome.result["seccomp"] == "2"  # a filter is loaded
    calls = outcome.result["calls"]
    assert calls == {name: "ENOSYS" if name == "clone3" else "EPERM" for name in calls}, calls
    await assert_healthy(runtime, tmp_path)


async def test_processes_and_command_lines_show_nothing_of_the_host(
    runtime: Runtime, tmp_path: Path, work_root: Path
) -> None:
    outcome = await runtime.run_job(await build(runtime, "host_layout"), make_job(tmp_path))
    assert outcome.ok and outcome.result is not None, outcome
    result = outcome.result
    assert 1 in result["pids"] and len(result["pids"]) <= 4, result["cmdlines"]  # its own only
    for pid, cmdline in result["cmdlines"].items():
        for host in (str(work_root), str(tmp_path), "pytest"):
            assert host not in cmdline, (pid, cmdline)
    for path in result["paths"]:  # the model is handed neutral paths
        assert str(work_root) not in path and str(tmp_path) not in path, result["paths"]


async def test_private_tmp_is_writable_and_emptied_between_jobs(
    runtime: Runtime, tmp_path: Path
) -> None:
    artifact = await build(runtime, "scratch")
    first = await runtime.run_job(artifact, make_job(tmp_path, mode="use", marker="one"))
    assert first.ok and first.result is not None, first
    assert first.result["tmpdir"] == "/tmp" and first.result["home"] == "/tmp", first.result
    assert first.result["found"] == ["from-setup"]
    second = await runtime.run_job(artifact, make_job(tmp_path, mode="use", marker="two"))
    assert second.ok and second.result is not None, second
    assert second.result["pid"] == first.result["pid"]  # the same warm worker
    # nothing of the first job is left; what setup() put there is
    assert second.result["found"] == ["from-setup"], second.result


async def test_filling_tmp_is_a_clear_model_error(runtime: Runtime, tmp_path: Path) -> None:
    artifact = await build(runtime, "scratch")
    started = time.monotonic()
    full = await runtime.run_job(artifact, make_job(tmp_path, mode="fill"))
    assert full.kind == "model_error", full
    assert "No space left on device" in full.message, full.message
    assert "/tmp is full" in full.message and "CLINAI_WORKER_TMP_MB" in full.message
    assert time.monotonic() - started < 20
    after = await runtime.run_job(artifact, make_job(tmp_path, mode="use", marker="after"))
    assert after.ok and after.result is not None, after
    assert after.result["found"] == ["from-setup"], after.result  # the full /tmp was emptied


async def test_a_hanging_setup_fails_with_setup_timeout(
    short_setup_runtime: Runtime, tmp_path: Path
) -> None:
    """setup() has its own limit, whatever the job's timeout: a model that hangs in it
    holds a worker slot for the setting's seconds, not longer."""
    runtime = short_setup_runtime
    artifact = await build(runtime, "hanging_setup")
    began = time.monotonic()
    outcome = await runtime.run_job(artifact, make_job(tmp_path, timeout_s=600))
    elapsed = time.monotonic() - began
    assert outcome.kind == "setup_timeout", outcome
    assert SHORT_SETUP_S <= elapsed < SHORT_SETUP_S + 5, elapsed
    assert "CLINAI_SETUP_TIMEOUT_S" in outcome.message, outcome.message
    assert "loading the weights" in outcome.message  # the setup log's tail
    await assert_healthy(runtime, tmp_path)


async def test_cancel_during_setup_ends_the_job_within_a_second(
    runtime: Runtime, tmp_path: Path, work_root: Path
) -> None:
    artifact = await build(runtime, "hanging_setup")
    job = make_job(tmp_path, timeout_s=600)
    task = asyncio.create_task(runtime.run_job(artifact, job))
    await wait_until(
        lambda: setup_printed(work_root, "loading the weights"),
        timeout_s=30,
        what="the worker to run setup()",
    )
    started = time.monotonic()
    assert await runtime.cancel_job(job.job_id)
    outcome = await task
    assert time.monotonic() - started < 1.0
    assert outcome.kind == "canceled", outcome
    await assert_healthy(runtime, tmp_path)


async def test_cancel_while_waiting_for_a_worker_slot_ends_within_a_second(
    runtime: Runtime, tmp_path: Path, work_root: Path
) -> None:
    artifact = await build(runtime, "sleeper")
    busy = [make_job(tmp_path, timeout_s=30) for _ in range(2)]  # every slot of the version
    running = [asyncio.create_task(runtime.run_job(artifact, job)) for job in busy]
    await wait_until(
        lambda: len(outputs_written(work_root, "started")) == len(busy),
        timeout_s=30,
        what="both slots to be busy",
    )
    waiting = make_job(tmp_path, timeout_s=30)
    task = asyncio.create_task(runtime.run_job(artifact, waiting))
    # True once the runtime knows the job: it is then waiting for a slot.
    await wait_until(lambda: runtime.cancel_job(waiting.job_id), timeout_s=10, what="cancel")
    started = time.monotonic()
    outcome = await task
    assert time.monotonic() - started < 1.0
    assert outcome.kind == "canceled", outcome
    for job in busy:
        assert await runtime.cancel_job(job.job_id)
    assert [(await t).kind for t in running] == ["canceled", "canceled"]
    await assert_healthy(runtime, tmp_path)

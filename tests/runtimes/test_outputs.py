"""Part of the runtime contract: a job's outputs are harvested safely and within its
limits (collected for the Docker runtime in test_docker_runtime.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec

from services.runtimes.base import JobOutcome, JobSpec, OutputLimits, Runtime
from tests.runtimes.conftest import build, make_job

SECRET = b"the platform's admin key"


def _secret_dir(tmp_path: Path) -> Path:
    """A host folder the model cannot read, outside every job's folder."""
    folder = tmp_path / "host-secrets"
    folder.mkdir()
    (folder / "admin.key").write_bytes(SECRET)
    os.chmod(folder / "admin.key", 0o600)
    os.chmod(folder, 0o700)
    return folder


async def test_a_model_swapping_an_output_folder_for_a_symlink_never_gets_a_host_file(
    runtime: Runtime, tmp_path: Path
) -> None:
    secret = _secret_dir(tmp_path)
    artifact = await build(runtime, "swap_outputs")
    for i in range(3):  # one warm worker: each job's own folder, out of the last one's thread's way
        job = make_job(tmp_path, secret_dir=str(secret), seconds=10, folder=f"d{i}")
        outcome = await runtime.run_job(artifact, job)
        assert outcome.ok, outcome
        assert outcome.outputs  # the decoy and the other files came back
        for output in outcome.outputs:
            assert SECRET not in output.path.read_bytes(), output.name


async def _run_writer(
    runtime: Runtime, tmp_path: Path, limits: OutputLimits | None = None, **params: Any
) -> tuple[JobOutcome, JobSpec]:
    artifact = await build(runtime, "write_outputs")
    job = make_job(tmp_path, **params)
    if limits is not None:
        job = msgspec.structs.replace(job, output_limits=limits)
    return await runtime.run_job(artifact, job), job


async def test_more_outputs_than_the_count_limit_fail_the_job_and_leave_no_copy(
    runtime: Runtime, tmp_path: Path
) -> None:
    outcome, job = await _run_writer(runtime, tmp_path, OutputLimits(max_files=10), empty_files=11)
    assert outcome.kind == "output_limit", outcome
    assert "more than 10 files and folders" in outcome.message
    assert "CLINAI_MAX_OUTPUT_FILES" in outcome.message
    assert outcome.outputs == () and list(job.output_dir.iterdir()) == []
    # at the limit, all come back
    outcome, _ = await _run_writer(runtime, tmp_path, OutputLimits(max_files=10), empty_files=10)
    assert outcome.ok and len(outcome.outputs) == 10, outcome


async def test_many_empty_files_end_the_job_quickly_at_the_default_count_limit(
    runtime: Runtime, tmp_path: Path
) -> None:
    began = time.monotonic()
    outcome, job = await _run_writer(runtime, tmp_path, empty_files=1500)
    assert outcome.kind == "output_limit", outcome
    assert "more than 1000 files" in outcome.message
    assert list(job.output_dir.iterdir()) == []
    assert time.monotonic() - began < job.timeout_s


async def test_a_sparse_file_over_the_size_limit_fails_the_job_at_its_apparent_size(
    runtime: Runtime, tmp_path: Path
) -> None:
    files = [{"name": f"big{i}.bin", "size": 1000 * 1000 * 1000, "sparse": True} for i in range(3)]
    outcome, job = await _run_writer(runtime, tmp_path, files=files)
    assert outcome.kind == "output_limit", outcome
    assert "CLINAI_MAX_OUTPUT_FILE_BYTES" in outcome.message
    assert list(job.output_dir.iterdir()) == []


async def test_a_sparse_file_over_the_workers_file_size_limit_is_an_output_limit(
    runtime: Runtime, tmp_path: Path
) -> None:
    """2 GB is past the process runtime's RLIMIT_FSIZE for a worker (1 GiB): the write
    fails inside the sandbox. Before, that was a `model_error` saying only "File too
    large". (A Docker worker writes it, and the harvest refuses it by the same limit.)"""
    files = [{"name": "huge.bin", "size": 2 * 1024**3, "sparse": True}]
    outcome, job = await _run_writer(runtime, tmp_path, files=files)
    assert outcome.kind == "output_limit", outcome
    if runtime.name == "process":
        assert "File too large" in outcome.message
    assert "CLINAI_MAX_OUTPUT_FILE_BYTES" in outcome.message
    assert outcome.outputs == () and list(job.output_dir.iterdir()) == []


async def test_outputs_over_the_total_size_limit_fail_the_job(
    runtime: Runtime, tmp_path: Path
) -> None:
    files = [{"name": f"part{i}.bin", "size": 600} for i in range(2)]
    outcome, job = await _run_writer(
        runtime, tmp_path, OutputLimits(max_total_bytes=1000), files=files
    )
    assert outcome.kind == "output_limit", outcome
    assert "CLINAI_MAX_OUTPUT_BYTES" in outcome.message
    assert list(job.output_dir.iterdir()) == []


async def test_outputs_with_any_name_come_back_for_the_caller_to_judge(
    runtime: Runtime, tmp_path: Path
) -> None:
    files = [{"name": "new\nline.txt"}, {"name_hex": b"bad-\xff.txt".hex()}, {"name": "ok.txt"}]
    outcome, _ = await _run_writer(runtime, tmp_path, files=files)
    assert outcome.ok, outcome
    assert sorted(o.name for o in outcome.outputs) == sorted(
        ["new\nline.txt", os.fsdecode(b"bad-\xff.txt"), "ok.txt"]
    )


async def test_a_worker_that_left_a_thread_running_stays_warm_and_keeps_its_thread(
    runtime: Runtime, tmp_path: Path
) -> None:
    writer = await build(runtime, "write_outputs")
    files = [{"name": "a.txt", "size": 10}]
    first = await runtime.run_job(writer, make_job(tmp_path, files=files))
    second = await runtime.run_job(writer, make_job(tmp_path, files=files))
    assert first.ok and second.ok, (first, second)
    assert second.setup_s == 0.0  # the same warm worker served it

    swapper = await build(runtime, "swap_outputs")
    secret = _secret_dir(tmp_path)
    job = make_job(tmp_path, secret_dir=str(secret), seconds=60, files=2)
    outcome = await runtime.run_job(swapper, job)
    assert outcome.ok and len(outcome.outputs) == 3, outcome
    # the first job's thread goes on swapping `d` for a while: this job writes `e`
    after_job = make_job(tmp_path, secret_dir=str(secret), files=2, folder="e")
    after = await runtime.run_job(swapper, after_job)
    assert after.ok and after.setup_s == 0.0, after  # the same worker, its thread let go on
    for output in (*outcome.outputs, *after.outputs):
        assert SECRET not in output.path.read_bytes(), output.name


def _ticks(outcome: JobOutcome) -> list[int]:
    (log,) = [o for o in outcome.outputs if o.name == "ticks.log"]
    return [int(line) for line in log.path.read_text().split()]


async def test_a_thread_left_running_is_stopped_while_out_is_read_and_emptied(
    runtime: Runtime, tmp_path: Path
) -> None:
    """The model's thread appends numbered ticks to out/ticks.log all the time. Had it
    run while the host copied and emptied out/, ticks written after the log was copied
    would be lost with it; frozen, every tick is in one job's copy or the next's."""
    ticker = await build(runtime, "ticking_outputs")
    first = await runtime.run_job(ticker, make_job(tmp_path, files=40))
    assert first.ok and len(first.outputs) == 41, first
    copied = _ticks(first)
    assert copied == list(range(len(copied))), "the log was copied while being written"
    report = await runtime.run_job(ticker, make_job(tmp_path, report=True))
    assert report.ok and report.setup_s == 0.0, report  # the same warm worker
    assert report.result is not None and report.result["alive"], report.result
    later = _ticks(report)
    assert later and later[0] > copied[-1], "the thread did not go on after the job"
    written = set(range(report.result["ticks"])) - set(report.result["unlinked"])
    lost = sorted(written - set(copied) - set(later))
    assert lost == [], f"ticks written while out/ was read and emptied: {lost[:20]}"


async def test_a_failed_job_that_left_too_many_files_to_clear_does_not_keep_its_worker(
    runtime: Runtime, tmp_path: Path
) -> None:
    limits = OutputLimits(max_files=10)
    few, _ = await _run_writer(runtime, tmp_path, limits, empty_files=3, fail=True)
    again, _ = await _run_writer(runtime, tmp_path, limits, empty_files=11, fail=True)
    assert few.kind == again.kind == "model_error", (few, again)
    assert again.setup_s == 0.0  # a failed job with a few files keeps the warm worker
    assert "failed after writing" in again.message
    after, _ = await _run_writer(runtime, tmp_path, limits, empty_files=1)
    assert after.ok and after.setup_s > 0.0, after  # too many: the worker was replaced

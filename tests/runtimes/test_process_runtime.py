"""Process-runtime specifics: the sandbox itself, environments, limits, the warm pool."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from services.embedded.sandbox_setup import check_bwrap
from services.infra.runtime_factory import make_runtime
from services.runtimes._uids import BLOCK, LAST_UID, claim_uid_range
from services.runtimes._worker import ProcessWorker
from services.runtimes.base import BuildFailedError, RuntimeUnavailableError
from services.runtimes.process import ProcessRuntime
from services.settings import Settings
from tests._infra import wait_until
from tests.runtimes.conftest import (
    PACKAGES,
    assert_healthy,
    build,
    make_job,
    process_config,
)

SANDBOX_REASON = check_bwrap()
needs_bwrap = pytest.mark.skipif(SANDBOX_REASON is not None, reason=SANDBOX_REASON or "")
pytestmark = pytest.mark.sandbox


def sandbox_uid_processes(base: int, count: int) -> list[int]:
    """Pids of host processes running as one of the sandbox uids."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{entry}").st_uid
        except FileNotFoundError:
            continue
        if base <= uid < base + count:
            pids.append(int(entry))
    return pids


@pytest.fixture
async def process_runtime(work_root: Path) -> ProcessRuntime:
    if SANDBOX_REASON:
        pytest.skip(SANDBOX_REASON)
    return ProcessRuntime(process_config(work_root))


@needs_bwrap
async def test_sandbox_is_unprivileged_and_bare(work_root: Path, tmp_path: Path) -> None:
    runtime = ProcessRuntime(process_config(work_root))
    try:
        outcome = await runtime.run_job(await build(runtime, "inspect_sandbox"), make_job(tmp_path))
    finally:
        await runtime.close()
    assert outcome.ok and outcome.result is not None, outcome
    info = outcome.result
    status = info["status"]
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(status[cap], 16) == 0, status
    assert status["NoNewPrivs"] == "1"
    assert info["uid"] != 0
    assert info["as"] == 512 * 1024 * 1024
    if os.geteuid() == 0:
        assert info["nproc"] == 32
    assert info["cwd"] == "/pkg"
    assert {"work", "home", "srv", "var"}.isdisjoint(info["root"]), info["root"]


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="per-worker uids are used when running as root")
async def test_fork_bomb_stopped_by_the_workers_own_process_limit(
    work_root: Path, tmp_path: Path
) -> None:
    # Searched from 64000: runtimes that predate the uid locks (other checkouts on this
    # host) take 61000 and 62000 without asking.
    runtime = ProcessRuntime(process_config(work_root, sandbox_uid_base=64000))
    try:
        outcome = await runtime.run_job(await build(runtime, "fork_bomb"), make_job(tmp_path))
        # Only this runtime's uids: other runtimes on the host hold other ranges.
        held = runtime.sandbox_uids
        assert held is not None
        uids = (held.start, len(held))
        assert outcome.kind == "model_error", outcome
        assert "Resource temporarily unavailable" in outcome.message  # EAGAIN from RLIMIT_NPROC
        # The strays were killed: only the (single) warm worker runs as a sandbox uid.
        await wait_until(
            lambda: len(sandbox_uid_processes(*uids)) <= runtime.live_workers,
            timeout_s=10,
            what="the fork bomb's processes to be gone",
        )
        host = await asyncio.create_subprocess_exec("true")
        assert await host.wait() == 0  # the host can still fork
        await assert_healthy(runtime, tmp_path)
    finally:
        await runtime.close()
    await wait_until(
        lambda: not sandbox_uid_processes(*uids), timeout_s=10, what="every worker to be gone"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="per-worker uids are used when running as root")
async def test_each_runtime_holds_a_uid_range_of_its_own(tmp_path: Path) -> None:
    """Two runtimes on one host (two executors) never share a sandbox uid, so neither's
    fork bomb can use up the other's process limit; a closed runtime's range is free."""
    config = process_config(tmp_path / "work", uid_lock_dir=str(tmp_path / "locks"))
    first, second = ProcessRuntime(config), ProcessRuntime(config)
    try:
        mine, theirs = first.claim_uids(), second.claim_uids()
        assert mine is not None and theirs is not None
        assert len(mine) == len(theirs) == config.max_workers_total + 16
        assert set(mine).isdisjoint(theirs), (mine, theirs)
        assert first.sandbox_uids == mine and first.claim_uids() == mine  # held, not re-claimed
        await first.close()
        third = ProcessRuntime(config)
        try:
            assert third.claim_uids() == mine  # released at close
        finally:
            await third.close()
    finally:
        await first.close()
        await second.close()


def test_no_free_uid_range_is_a_clear_refusal(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    held = claim_uid_range(first=LAST_UID + 1 - 2 * BLOCK, count=2 * BLOCK, lock_dir=locks)
    try:
        with pytest.raises(RuntimeUnavailableError) as info:
            claim_uid_range(first=LAST_UID + 1 - 2 * BLOCK, count=1, lock_dir=locks)
        assert "other ClinAI runtimes on this host hold them" in info.value.message
        assert "CLINAI_WORKERS_TOTAL" in info.value.hint
    finally:
        held.release()
    again = claim_uid_range(first=LAST_UID + 1 - 2 * BLOCK, count=1, lock_dir=locks)
    assert again.uids == range(LAST_UID + 1 - 2 * BLOCK, LAST_UID + 2 - 2 * BLOCK)
    again.release()


@needs_bwrap
async def test_build_with_a_real_requirement(tmp_path: Path) -> None:
    runtime = ProcessRuntime(process_config(tmp_path / "work"))
    lines: list[str] = []
    try:
        artifact = await build(runtime, "with_requirement", lines)
        outcome = await runtime.run_job(artifact, make_job(tmp_path))
    finally:
        await runtime.close()
    log = "".join(lines)
    assert "$ pip install" in log
    assert "Successfully installed six-1.16.0" in log
    assert outcome.ok and outcome.result == {"six": "1.16.0"}, outcome
    assert "--cache-dir <pip cache>" in log  # a persistent cache, shown without its path
    assert (tmp_path / "work" / "wheel-cache").is_dir()
    assert str(tmp_path) not in log
    assert "--index-url https://pypi.org/simple" in log


@needs_bwrap
async def test_pip_failure_names_the_step(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(PACKAGES / "noop", package)
    (package / "requirements.txt").write_text("clinai-no-such-package-4f1c==0.0.1\n")
    runtime = ProcessRuntime(process_config(tmp_path / "work"))

    async def sink(text: str) -> None:
        pass

    with pytest.raises(BuildFailedError) as info:
        await runtime.build(
            package_dir=package, package_hash="p-bad", requirements_hash="r-bad", log=sink
        )
    await runtime.close()
    assert "pip install failed" in info.value.message
    assert "clinai-no-such-package-4f1c" in info.value.log_tail
    assert len(info.value.log_tail.splitlines()) <= 40
    assert not [p for p in (tmp_path / "work" / "envs").iterdir() if p.name.startswith(".tmp")]


@needs_bwrap
async def test_environment_shared_and_concurrent_builds_do_not_clash(tmp_path: Path) -> None:
    runtime = ProcessRuntime(process_config(tmp_path / "work"))
    try:
        artifacts = await asyncio.gather(*(build(runtime, n) for n in ("noop", "raises", "loud")))
    finally:
        await runtime.close()
    venvs = {a.details["venv"] for a in artifacts}
    assert len(venvs) == 1  # one environment per requirements set
    assert len({a.reference for a in artifacts}) == 3  # one read-only copy per package
    envs = list((tmp_path / "work" / "envs").iterdir())
    assert [p.name for p in envs] == [Path(next(iter(venvs))).name]
    assert not os.access(Path(artifacts[0].reference) / "predict.py", os.W_OK) or os.geteuid() == 0
    assert oct(os.stat(Path(artifacts[0].reference) / "predict.py").st_mode & 0o777) == "0o444"


async def test_missing_bubblewrap_is_reported_and_unsafe_mode_works(
    tmp_path: Path, work_root: Path
) -> None:
    missing = ProcessRuntime(process_config(work_root, bwrap="/nonexistent/bwrap"))
    with pytest.raises(RuntimeUnavailableError) as info:
        await build(missing, "noop")
    assert "apt-get install bubblewrap" in info.value.hint
    with pytest.raises(RuntimeUnavailableError):
        await missing.run_job(
            await build(ProcessRuntime(process_config(work_root, unsafe_no_sandbox=True)), "noop"),
            make_job(tmp_path),
        )
    await missing.close()

    unsafe = ProcessRuntime(
        process_config(work_root, bwrap="/nonexistent/bwrap", unsafe_no_sandbox=True)
    )
    try:
        artifact = await build(unsafe, "noop")
        outcome = await unsafe.run_job(artifact, make_job(tmp_path))
        assert outcome.ok, outcome
        failed = await unsafe.run_job(await build(unsafe, "raises"), make_job(tmp_path))
        assert failed.kind == "model_error"
        timed_out = await unsafe.run_job(
            await build(unsafe, "sleeper"), make_job(tmp_path, timeout_s=0.5)
        )
        assert timed_out.kind == "timeout"
    finally:
        await unsafe.close()


@needs_bwrap
async def test_idle_workers_stop(work_root: Path, tmp_path: Path) -> None:
    runtime = ProcessRuntime(process_config(work_root, idle_timeout_s=0.3))
    try:
        assert (await runtime.run_job(await build(runtime, "noop"), make_job(tmp_path))).ok
        assert runtime.live_workers == 1
        await wait_until(lambda: runtime.live_workers == 0, timeout_s=10, what="idle reaping")
        assert (await runtime.run_job(await build(runtime, "noop"), make_job(tmp_path))).ok
    finally:
        await runtime.close()


@needs_bwrap
async def test_concurrency_per_version_and_close(work_root: Path, tmp_path: Path) -> None:
    runtime = ProcessRuntime(process_config(work_root, max_workers_per_version=1))
    artifact = await build(runtime, "noop")
    outcomes = await asyncio.gather(
        *(runtime.run_job(artifact, make_job(tmp_path)) for _ in range(4))
    )
    assert all(o.ok for o in outcomes)
    assert len({o.result["pid"] for o in outcomes if o.result}) == 1  # one worker, serialised
    assert runtime.live_workers == 1
    assert runtime.warm_workers() == {artifact.reference: (1, 0)}  # (idle, busy)

    sleeper = await build(runtime, "sleeper")
    job = make_job(tmp_path, timeout_s=60)
    task = asyncio.create_task(runtime.run_job(sleeper, job))
    await wait_until(lambda: runtime.live_workers == 2, timeout_s=30, what="a second worker")
    assert runtime.warm_workers() == {artifact.reference: (1, 0), sleeper.reference: (0, 1)}
    await runtime.close()
    outcome = await asyncio.wait_for(task, 5)
    assert not outcome.ok
    assert runtime.live_workers == 0
    assert not list((work_root / "workers").iterdir()) or all(
        not (p / job.job_id).exists() for p in (work_root / "workers").iterdir()
    )


@needs_bwrap
async def test_a_user_module_named_runner_does_not_replace_the_runner(
    work_root: Path, tmp_path: Path
) -> None:
    runtime = ProcessRuntime(process_config(work_root))
    try:
        outcome = await runtime.run_job(await build(runtime, "shadow_runner"), make_job(tmp_path))
    finally:
        await runtime.close()
    assert outcome.ok and outcome.result == {"ok": True}, outcome


@needs_bwrap
async def test_crash_while_importing_fails_the_build(work_root: Path) -> None:
    runtime = ProcessRuntime(process_config(work_root))
    with pytest.raises(BuildFailedError) as info:
        await build(runtime, "crash_on_import")
    await runtime.close()
    assert "died while loading predict.py" in info.value.message
    assert "SIGSEGV" in info.value.message


@needs_bwrap
async def test_tmp_size_is_the_worker_tmp_setting(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path / "data", worker_tmp_mb=8)
    runtime = await make_runtime(settings)
    try:
        artifact = await build(runtime, "scratch")
        outcome = await runtime.run_job(artifact, make_job(tmp_path, mode="fill"))
    finally:
        await runtime.close()
    assert outcome.kind == "model_error", outcome
    assert "/tmp is full: it holds at most 8 MiB" in outcome.message, outcome.message


@needs_bwrap
async def test_a_worker_that_cannot_be_frozen_is_stopped_before_its_outputs_are_read(
    work_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback when the model left something running that will not stop (a thread
    in an uninterruptible wait): the worker ends before out/ is read, its outputs still
    come back, and the next job gets a fresh worker. Freezing itself
    is stood in for: no model can be made unfreezable reliably."""
    attempts: list[int] = []

    async def cannot_freeze(worker: ProcessWorker, timeout_s: float = 0.0) -> None:
        attempts.append(worker.proc.pid)

    monkeypatch.setattr(ProcessWorker, "freeze", cannot_freeze)
    runtime = ProcessRuntime(process_config(work_root))
    try:
        ticker = await build(runtime, "ticking_outputs")
        first = await runtime.run_job(ticker, make_job(tmp_path, files=5))
        assert first.ok and len(first.outputs) == 6, first
        assert len(attempts) == 1
        with pytest.raises(ProcessLookupError):
            os.kill(attempts[0], 0)  # the worker (its whole sandbox) is gone
        second = await runtime.run_job(ticker, make_job(tmp_path, files=1))
        assert second.ok and second.setup_s > 0.0, second  # a fresh worker
        assert len(attempts) == 2 and attempts[1] != attempts[0]
    finally:
        await runtime.close()

"""Runtime fixtures. `runtime` is parametrised over the adapters of the runtime port so the
contract suite (test_contract.py) runs against each; add the Docker runtime to `ADAPTERS`."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.embedded.sandbox_setup import check_bwrap
from services.runtimes.base import Artifact, JobSpec, Runtime
from services.runtimes.process import ProcessRuntime, ProcessRuntimeConfig

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
ADAPTERS = ["process"]
SHORT_SETUP_S = 3.0  # `short_setup_runtime`'s limit on a worker's import + setup()


def process_config(work_root: Path, **overrides: Any) -> ProcessRuntimeConfig:
    fields: dict[str, Any] = {
        "work_root": str(work_root),
        "memory_limit_mb": 512,
        "max_processes": 32,
        "idle_timeout_s": 60.0,
        "max_workers_per_version": 2,
        "max_workers_total": 6,
        "tmp_size_mb": 32,
    }
    fields.update(overrides)
    return ProcessRuntimeConfig(**fields)


@pytest.fixture(scope="session")
def work_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared between tests so environments (keyed by requirements) are built once."""
    return tmp_path_factory.mktemp("runtime-work")


@pytest.fixture(params=ADAPTERS)
async def runtime(request: pytest.FixtureRequest, work_root: Path) -> AsyncIterator[Runtime]:
    if request.param == "process":
        reason = check_bwrap()
        if reason:
            pytest.skip(reason)
        rt: Runtime = ProcessRuntime(process_config(work_root))
    else:  # pragma: no cover - future adapters
        raise AssertionError(f"unknown adapter {request.param}")
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def short_setup_runtime(work_root: Path) -> AsyncIterator[Runtime]:
    """A process runtime whose workers get SHORT_SETUP_S for import + setup() (test
    modules of other adapters override it, like `runtime`)."""
    reason = check_bwrap()
    if reason:
        pytest.skip(reason)
    rt = ProcessRuntime(process_config(work_root, setup_timeout_s=SHORT_SETUP_S))
    try:
        yield rt
    finally:
        await rt.close()


def setup_printed(work_root: Path, text: str) -> bool:
    """Whether a worker's setup log (what it printed outside jobs) holds `text`.
    Adapters keep it in <work_root>/workers/<worker>/ on the host."""
    for log in work_root.glob("workers/*/*.log"):
        try:
            if text in log.read_text(errors="replace"):
                return True
        except OSError:  # its worker was just removed
            continue
    return False


def tree_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


async def build(runtime: Runtime, name: str, lines: list[str] | None = None) -> Artifact:
    package = PACKAGES / name
    requirements = (package / "requirements.txt").read_bytes()

    async def sink(text: str) -> None:
        if lines is not None:
            lines.append(text)

    return await runtime.build(
        package_dir=package,
        package_hash=tree_hash(package),
        requirements_hash=hashlib.sha256(requirements).hexdigest()[:32],
        log=sink,
    )


def make_job(
    tmp_path: Path, *, timeout_s: float = 30.0, owner: str = "usr_a", **params: Any
) -> JobSpec:
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    input_path = tmp_path / f"{job_id}-input.txt"
    input_path.write_text("some input")
    output_dir = tmp_path / job_id / "out"
    output_dir.mkdir(parents=True)
    return JobSpec(
        job_id=job_id,
        version_id="v1",
        owner=owner,
        input_path=input_path,
        output_dir=output_dir,
        params=params,
        timeout_s=timeout_s,
    )


async def assert_healthy(runtime: Runtime, tmp_path: Path) -> None:
    """A no-op job on the runtime still succeeds."""
    artifact = await build(runtime, "noop")
    outcome = await runtime.run_job(artifact, make_job(tmp_path))
    assert outcome.ok, outcome

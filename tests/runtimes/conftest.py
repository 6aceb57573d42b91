"""Runtime fixtures. `runtime` and `short_setup_runtime` are parametrised over the
adapters of the runtime port, so the contract suites (test_contract.py, test_outputs.py)
run against each: `process` (skipped without bubblewrap) and `docker` (skipped without
an engine and the base image, with the reason)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiodocker import Docker, DockerError

from services.embedded.sandbox_setup import check_bwrap
from services.runtimes.base import Artifact, JobSpec, Runtime, RuntimeUnavailableError
from services.runtimes.docker import DEFAULT_DOCKER_SOCKET, DockerRuntime, DockerRuntimeConfig
from services.runtimes.process import ProcessRuntime, ProcessRuntimeConfig

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
ADAPTERS = [
    pytest.param("process", marks=pytest.mark.sandbox),
    pytest.param("docker", marks=pytest.mark.docker),
]
SHORT_SETUP_S = 3.0  # `short_setup_runtime`'s limit on a worker's import + setup()
BASE_IMAGE = os.environ.get("CLINAI_BASE_IMAGE", "clinai/python:3.11-slim")
DOCKER_HOST = os.environ.get("DOCKER_HOST")  # None: the local socket


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


def docker_config(work_dir: Path, **overrides: Any) -> DockerRuntimeConfig:
    fields: dict[str, Any] = {
        "base_image": BASE_IMAGE,
        "docker_host": DOCKER_HOST,
        "work_dir": work_dir,
        "memory_mb": 256,
        "tmpfs_mb": 32,  # a tmpfs is the container's memory: the /tmp filler stays under 256
        "pids_limit": 64,
        "idle_timeout_s": 60.0,
        "max_workers_per_version": 2,
        "max_workers_total": 6,
    }
    fields.update(overrides)
    return DockerRuntimeConfig(**fields)


@functools.cache
def engine_problem() -> str | None:
    """Why the Docker tests cannot run here, or None. Never raises: no engine is a skip."""

    async def probe() -> str | None:
        try:
            runtime = await DockerRuntime.connect(docker_config(Path("/nonexistent")))
        except RuntimeUnavailableError as err:
            return f"{err}: run .ci/docker-setup"
        await runtime.close()
        docker = Docker(url=DOCKER_HOST or DEFAULT_DOCKER_SOCKET)  # the engine answers
        try:
            await docker.images.inspect(BASE_IMAGE)
        except DockerError:
            return f"base image {BASE_IMAGE} is missing: run .ci/docker-setup"
        finally:
            await docker.close()
        return None

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def work_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared between tests so environments (keyed by requirements) are built once.
    Every adapter keeps its workers' folders in <work_root>/workers/<worker>/."""
    return tmp_path_factory.mktemp("runtime-work")


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The runtime adapter under test, or a skip saying why it cannot run here."""
    name = str(request.param)
    reason = check_bwrap() if name == "process" else engine_problem()
    if reason:
        pytest.skip(reason)
    return name


async def open_runtime(adapter: str, work_root: Path, *, setup_timeout_s: float | None) -> Runtime:
    if adapter == "process":
        limit = {} if setup_timeout_s is None else {"setup_timeout_s": setup_timeout_s}
        return ProcessRuntime(process_config(work_root, **limit))
    limit = {} if setup_timeout_s is None else {"ready_timeout_s": setup_timeout_s}
    return await DockerRuntime.connect(docker_config(work_root / "workers", **limit))


@pytest.fixture
async def runtime(adapter: str, work_root: Path) -> AsyncIterator[Runtime]:
    rt = await open_runtime(adapter, work_root, setup_timeout_s=None)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def short_setup_runtime(adapter: str, work_root: Path) -> AsyncIterator[Runtime]:
    """A runtime whose workers get SHORT_SETUP_S for import + setup()."""
    rt = await open_runtime(adapter, work_root, setup_timeout_s=SHORT_SETUP_S)
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

"""The `docker` runtime beyond the runtime contract (tests/runtimes/test_contract.py and
test_outputs.py run on it through conftest's `runtime`): what only images and containers
have: the build cache, image reuse, build-time secrets kept out of the image, the
container's lockdown.

Needs a Docker engine and the base image: `.ci/docker-setup` provides both. Without
them every test here is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvloop
from aiodocker import Docker

from services.runtimes._docker_build import (
    find_runner_dir,
    runner_digest,
    write_context,
)
from services.runtimes._pip import PipOptions
from services.runtimes.base import BuildFailedError, RuntimeUnavailableError
from services.runtimes.docker import (
    DEBIAN_CA_BUNDLE,
    DockerRuntime,
    DockerRuntimeConfig,
)
from tests._infra import free_port, outputs_written, serving, wait_until
from tests.runtimes.conftest import (
    DOCKER_HOST,
    PACKAGES,
    build,
    docker_config,
    engine_problem,
    make_job,
    tree_hash,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def engine() -> None:
    reason = engine_problem()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def work_root(tmp_path: Path) -> Path:
    """Overrides conftest's: each test here peeks at its own runtime's workers only."""
    return tmp_path / "work"


@pytest.fixture
async def runtime(engine: None, work_root: Path) -> AsyncIterator[DockerRuntime]:
    """Overrides conftest's parametrised `runtime`: the tests here are Docker's own."""
    rt = await DockerRuntime.connect(docker_config(work_root / "workers"))
    try:
        yield rt
    finally:
        await rt.close()


def copy_package(name: str, dest: Path, *, marker: str | None = None) -> Path:
    """A private copy of tests/packages/<name>, made unique by a comment line."""
    shutil.copytree(PACKAGES / name, dest)
    if marker is not None:
        with (dest / "predict.py").open("a") as fh:
            fh.write(f"\n# {marker}\n")
    return dest


async def build_dir(runtime: DockerRuntime, package: Path, lines: list[str]) -> Any:
    async def sink(text: str) -> None:
        lines.append(text)

    return await runtime.build(
        package_dir=package,
        package_hash=tree_hash(package),
        requirements_hash=tree_hash(package)[:8],
        log=sink,
    )


# ---- images ---------------------------------------------------------------------


async def test_identical_package_is_not_rebuilt(runtime: DockerRuntime, tmp_path: Path) -> None:
    package = copy_package("noop", tmp_path / "pkg", marker=uuid.uuid4().hex)
    first_log: list[str] = []
    first = await build_dir(runtime, package, first_log)
    assert any(line.startswith("Step ") for line in first_log)
    again_log: list[str] = []
    started = time.monotonic()
    again = await build_dir(runtime, package, again_log)
    assert again.reference == first.reference
    assert again.runtime == "docker" and again.reference.startswith("sha256:")
    assert not any("Step " in line for line in again_log), again_log  # no build at all
    assert "reusing" in "".join(again_log)
    assert time.monotonic() - started < 2


async def test_code_only_change_does_not_reinstall_dependencies(
    runtime: DockerRuntime, tmp_path: Path
) -> None:
    """with_requirement pins six: the pip step runs once per requirements.txt."""
    lines: list[str] = []
    package = copy_package("with_requirement", tmp_path / "pkg", marker=uuid.uuid4().hex)
    await build_dir(runtime, package, lines)  # installs six, or hits an earlier run's cache
    (package / "predict.py").write_text((package / "predict.py").read_text() + "\n# v2\n")
    lines.clear()
    started = time.monotonic()
    artifact = await build_dir(runtime, package, lines)
    elapsed = time.monotonic() - started
    log = "".join(lines)
    stream = runtime.last_build
    assert stream is not None
    pip_steps = [step for step in stream.cached_steps + stream.ran_steps if "pip install" in step]
    assert pip_steps and all(step in stream.cached_steps for step in pip_steps), log
    assert not any("pip install" in step for step in stream.ran_steps), log
    assert "Collecting" not in log and "Successfully installed" not in log
    code_steps = [step for step in stream.cached_steps if "COPY package/" in step]
    assert "COPY package/" in log and not code_steps, log  # the code layer was rebuilt
    assert elapsed < 60, f"a code-only rebuild took {elapsed:.1f} s"
    outcome = await runtime.run_job(artifact, make_job(tmp_path))
    assert outcome.ok, outcome


async def test_build_secrets_are_not_in_the_image(engine: None, tmp_path: Path) -> None:
    """The CA bundle and index credentials reach pip in the discarded build stage only."""
    marker = f"clinai-secret-{uuid.uuid4().hex}"
    ca = tmp_path / "ca.pem"
    host_ca = DEBIAN_CA_BUNDLE.read_bytes() if DEBIAN_CA_BUNDLE.is_file() else b""
    ca.write_bytes(host_ca + f"\n# {marker}\n".encode())
    rt = await DockerRuntime.connect(
        docker_config(
            tmp_path / "workers",
            ca_bundle=ca,
            pip_extra_index_urls=(f"https://user:{marker}@index.invalid/simple",),
        )
    )
    try:
        package = copy_package("noop", tmp_path / "pkg", marker=uuid.uuid4().hex)
        artifact = await build_dir(rt, package, [])
        # Control: the secrets were in the build context sent to the engine...
        context = write_context(
            package_dir=package,
            runner_dir=find_runner_dir(),
            dockerfile_text="",
            pip=PipOptions(ca_bundle=ca, extra_index_urls=(f"https://u:{marker}@x/simple",)),
        )
        with context:
            assert context.read().count(marker.encode()) == 2
        # ...and are nowhere in the image.
        found = await scan_image(artifact.reference, [marker.encode(), b"clinai-build"])
        assert found == set(), f"{found} found in the saved image {artifact.reference}"
        async with Docker(url=DOCKER_HOST) as docker:
            history = await docker.images.history(artifact.reference)
        assert marker not in repr(history)
    finally:
        await rt.close()


async def scan_image(reference: str, needles: list[bytes]) -> set[bytes]:
    """Which `needles` occur anywhere in `docker save` of the image (every layer and
    the config). Layers are stored uncompressed in a save."""
    found: set[bytes] = set()
    overlap = max(len(n) for n in needles)
    async with Docker(url=DOCKER_HOST) as docker, docker.images.export_image(reference) as tar:
        tail = b""
        async for chunk in tar.iter_chunked(1 << 20):
            window = tail + chunk
            found.update(n for n in needles if n in window)
            tail = window[-overlap:]
    return found


async def test_failing_pip_step_is_named(runtime: DockerRuntime, tmp_path: Path) -> None:
    package = copy_package("noop", tmp_path / "pkg")
    (package / "requirements.txt").write_text(f"clinai-no-such-package-{uuid.uuid4().hex[:8]}\n")
    with pytest.raises(BuildFailedError) as info:
        await build_dir(runtime, package, [])
    assert "pip install" in info.value.message
    assert "non-zero code" in info.value.message or "returned" in info.value.message
    assert "clinai-no-such-package" in info.value.log_tail
    assert "pip" in info.value.hint


@pytest.fixture
def registry(engine: None, tmp_path: Path) -> Iterator[str]:
    """A local registry (Debian's docker-registry) on 127.0.0.1, which the engine
    trusts without TLS."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("no local registry: apt-get install docker-registry")
    port = free_port()
    conf = tmp_path / "registry.yml"
    conf.write_text(
        "version: 0.1\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'registry'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    argv = [binary, "serve", str(conf)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    with serving(argv, port, what="the local registry", **quiet):
        yield f"127.0.0.1:{port}"


async def test_push_to_registry_and_run_from_the_digest(registry: str, tmp_path: Path) -> None:
    cfg = docker_config(tmp_path / "workers", registry=registry)
    rt = await DockerRuntime.connect(cfg)
    try:
        package = copy_package("noop", tmp_path / "pkg", marker=uuid.uuid4().hex)
        artifact = await build_dir(rt, package, [])
    finally:
        await rt.close()
    assert artifact.reference.startswith(f"{registry}/clinai-model@sha256:")
    async with Docker(url=DOCKER_HOST) as docker:  # forget it locally: runs must pull
        tag = artifact.details["image"].rpartition(":")[2]
        for ref in (artifact.details["image"], f"{registry}/clinai-model:{tag}"):
            await docker.images.delete(ref, force=True)
    rt = await DockerRuntime.connect(cfg)
    try:
        outcome = await rt.run_job(artifact, make_job(tmp_path))
        assert outcome.ok, outcome
    finally:
        await rt.close()


# ---- containers -----------------------------------------------------------------


def by_package(package_hash: str) -> str:
    return json.dumps({"label": [f"ai.clinai.package-hash={package_hash}"]})


async def test_worker_container_is_locked_down(runtime: DockerRuntime, tmp_path: Path) -> None:
    artifact = await build(runtime, "inspect_sandbox")
    outcome = await runtime.run_job(artifact, make_job(tmp_path))
    assert outcome.ok, outcome
    result = outcome.result or {}
    assert result["uid"] == 10001
    assert result["status"]["CapEff"] == "0000000000000000"
    assert result["status"]["CapBnd"] == "0000000000000000"
    assert result["status"]["NoNewPrivs"] == "1"
    async with Docker(url=DOCKER_HOST) as docker:
        (container,) = await docker.containers.list(filters=by_package(artifact.package_hash))
        info = await container.show()
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    no_new_privileges, seccomp = host["SecurityOpt"]  # never seccomp=unconfined
    assert no_new_privileges == "no-new-privileges"
    assert seccomp.startswith("seccomp=") and json.loads(seccomp.removeprefix("seccomp="))
    assert host["Memory"] == 256 * 1024 * 1024 and host["MemorySwap"] == host["Memory"]
    assert host["PidsLimit"] == 64
    assert host["NanoCpus"] == 1_000_000_000
    assert list(host["Tmpfs"]) == ["/tmp"]
    assert [m["Destination"] for m in info["Mounts"]] == ["/job"]
    assert info["Config"]["User"] == "10001:10001"


async def test_jobs_go_over_fifos_and_older_images_still_run_over_stdio(
    runtime: DockerRuntime, tmp_path: Path, work_root: Path
) -> None:
    artifact = await build(runtime, "noop")
    assert artifact.details["runner_revision"] == "4"
    assert f"-r4-{runner_digest(find_runner_dir())}" in artifact.details["image"]
    assert (await runtime.run_job(artifact, make_job(tmp_path))).ok
    # A version built before revision 2 has no runner_revision: attached stdin/stdout.
    older = msgspec.structs.replace(
        artifact, details={k: v for k, v in artifact.details.items() if k != "runner_revision"}
    )
    other = await DockerRuntime.connect(docker_config(work_root / "other-workers"))
    try:
        outcome = await other.run_job(older, make_job(tmp_path))
        assert outcome.ok, outcome
        async with Docker(url=DOCKER_HOST) as docker:
            containers = await docker.containers.list(filters=by_package(artifact.package_hash))
            commands = sorted([(await c.show())["Config"]["Cmd"] or [] for c in containers])
    finally:
        await other.close()
    assert commands == [[], ["--channel", "/job/requests.fifo", "/job/responses.fifo"]]


def test_jobs_run_on_the_services_event_loop(engine: None, tmp_path: Path) -> None:
    """The services run on uvloop, whose pipe transports differ from asyncio's (a FIFO
    opened read-write once made the requests vanish)."""

    async def two_jobs() -> list[bool]:
        runtime = await DockerRuntime.connect(docker_config(tmp_path / "workers"))
        try:
            artifact = await build(runtime, "noop")
            return [(await runtime.run_job(artifact, make_job(tmp_path))).ok for _ in range(2)]
        finally:
            await runtime.close()

    assert uvloop.run(asyncio.wait_for(two_jobs(), 120)) == [True, True]


async def test_container_killed_from_outside(
    runtime: DockerRuntime, tmp_path: Path, work_root: Path
) -> None:
    """Idle: the pool notices and starts a new one. Busy: the job fails as
    `infrastructure` (not the model's fault) and the runtime recovers."""
    artifact = await build(runtime, "sleeper")
    job = make_job(tmp_path, timeout_s=60)
    task = asyncio.create_task(runtime.run_job(artifact, job))
    await wait_until(
        lambda: bool(outputs_written(work_root, "started")), timeout_s=30, what="the job to run"
    )
    async with Docker(url=DOCKER_HOST) as docker:
        for container in await docker.containers.list(filters=by_package(artifact.package_hash)):
            await container.kill()
    outcome = await task
    assert outcome.kind == "infrastructure", outcome

    noop = await build(runtime, "noop")
    assert (await runtime.run_job(noop, make_job(tmp_path))).ok
    async with Docker(url=DOCKER_HOST) as docker:
        (idle,) = await docker.containers.list(filters=by_package(noop.package_hash))
        await idle.kill()
        await idle.wait()
    await wait_until(
        lambda: runtime.live_workers == 0, timeout_s=10, what="the runtime to see it died"
    )
    again = await runtime.run_job(noop, make_job(tmp_path))
    assert again.ok and again.setup_s > 0, again


async def test_idle_worker_is_stopped(engine: None, tmp_path: Path) -> None:
    rt = await DockerRuntime.connect(docker_config(tmp_path / "workers", idle_timeout_s=0.5))
    try:
        artifact = await build(rt, "noop")
        assert (await rt.run_job(artifact, make_job(tmp_path))).ok
        async with Docker(url=DOCKER_HOST) as docker:

            async def gone() -> bool:
                left = await docker.containers.list(
                    all=1, filters=by_package(artifact.package_hash)
                )
                return not left

            await wait_until(gone, timeout_s=10, what="the idle container to be removed")
        again = await rt.run_job(artifact, make_job(tmp_path))
        assert again.ok and again.setup_s > 0
    finally:
        await rt.close()


async def test_close_removes_every_container(engine: None, tmp_path: Path) -> None:
    rt = await DockerRuntime.connect(docker_config(tmp_path / "workers"))
    artifact = await build(rt, "noop")
    jobs = [rt.run_job(artifact, make_job(tmp_path)) for _ in range(2)]
    assert all(o.ok for o in await asyncio.gather(*jobs))
    await rt.close()
    async with Docker(url=DOCKER_HOST) as docker:
        left = await docker.containers.list(all=1, filters=by_package(artifact.package_hash))
    assert left == []
    assert not any((tmp_path / "workers").iterdir())


async def test_unreachable_engine_is_runtime_unavailable(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailableError) as info:
        await DockerRuntime.connect(
            docker_config(tmp_path, docker_host="unix:///nonexistent/docker.sock")
        )
    assert "does not answer" in info.value.message and info.value.hint


def test_config_refuses_root_and_bad_limits() -> None:
    with pytest.raises(ValueError, match="user"):
        DockerRuntimeConfig(user="0:0")
    with pytest.raises(ValueError, match="memory_mb"):
        DockerRuntimeConfig(memory_mb=1)


async def test_connect_without_an_engine_is_runtime_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No DOCKER_HOST and no socket: a RuntimeUnavailableError naming where it looked (this
    is what lets the Docker tests skip with a reason), never aiodocker's bare assert."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    missing = f"unix://{tmp_path}/docker.sock"
    monkeypatch.setattr("services.runtimes.docker.DEFAULT_DOCKER_SOCKET", missing)
    with pytest.raises(RuntimeUnavailableError, match="does not answer") as caught:
        await DockerRuntime.connect(docker_config(tmp_path, docker_host=None))
    assert missing in str(caught.value)

"""The ClinAI image (deploy/Dockerfile), built from the offline base image as CI does
(deploy/build-image.sh): `clinai serve api` in it answers /healthz against a NATS and a
Postgres started on this host; the five services in containers of it make a ready stack
that builds a package and runs a job; it runs as an unprivileged user and keeps no
secret in its configuration or history; the process runtime's sandbox works in it with
the container options deploy/README.md gives. Skipped, with the reason, without an
engine."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from services.packages import zip_folder
from tests._infra import free_port, wait_until
from tests._s3 import create_bucket, s3_env
from tests.api._client import Client
from tests.runtimes.conftest import BASE_IMAGE, PACKAGES, engine_problem

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("CLINAI_TEST_IMAGE", "clinai:ci")
# What deploy/README.md says a container needs for bubblewrap (no capability at all).
SANDBOX_OPTIONS = [
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "systempaths=unconfined",
]


def _docker(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (or found current in the layer cache) once per module."""
    reason = engine_problem()
    if reason:
        pytest.skip(reason)
    built = subprocess.run(
        ["bash", str(ROOT / "deploy" / "build-image.sh"), TAG],
        env={**os.environ, "CLINAI_IMAGE_BASE": BASE_IMAGE},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(
            f"deploy/build-image.sh failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
        )
    return TAG


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"clinai-test-{uuid.uuid4().hex[:12]}"
    yield name
    _docker("rm", "--force", name)


@pytest.fixture
def containers() -> Iterator[Callable[..., str]]:
    """Start containers of the image (detached, host network); all removed afterwards."""
    names: list[str] = []

    def start(*args: str) -> str:
        name = f"clinai-test-{uuid.uuid4().hex[:12]}"
        names.append(name)
        started = _docker("run", "--detach", "--name", name, "--network", "host", *args)
        assert started.returncode == 0, started.stderr
        return name

    yield start
    for name in names:
        _docker("rm", "--force", name)


def _logs(names: list[str]) -> str:
    parts = []
    for name in names:
        logs = _docker("logs", "--tail", "30", name)
        parts.append(f"--- {name}\n{logs.stdout}{logs.stderr}")
    return "\n".join(parts)


async def test_serve_api_in_the_image_answers_healthz(
    image: str, container_name: str, nats_url: str, database_url: str
) -> None:
    port = free_port()
    started = _docker(
        "run", "--detach", "--name", container_name, "--network", "host",
        "--env", f"CLINAI_NATS_URL={nats_url}",
        "--env", f"CLINAI_DATABASE_URL={database_url}",
        "--env", "CLINAI_HOST=127.0.0.1",
        "--env", f"CLINAI_PORT={port}",
        image, "serve", "api",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    answer: dict[str, object] = {}

    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            state = _docker("inspect", "--format", "{{.State.Running}}", container_name)
            if state.stdout.strip() != "true":
                logs = _docker("logs", container_name)
                raise AssertionError(f"the container stopped:\n{logs.stdout}\n{logs.stderr}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    answer.update(status=resp.status, body=await resp.read())
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(healthy, what="/healthz of the API in the image", timeout_s=60)
    assert orjson.loads(answer["body"]) == {"status": "ok"}  # type: ignore[arg-type]


def test_the_image_runs_as_an_unprivileged_user_and_holds_no_secret(image: str) -> None:
    config = orjson.loads(_docker("image", "inspect", image, "--format", "{{json .Config}}").stdout)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["clinai"]
    who = _docker("run", "--rm", "--network", "none", "--entrypoint", "id", image)
    assert who.stdout.split()[0] == "uid=10001(clinai)", who.stderr
    history = _docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    for text in (" ".join(config["Env"]), history):
        for word in ("SECRET", "PASSWORD", "SIGNING_KEY", "AWS_ACCESS", "TOKEN"):
            assert word not in text.upper()


def test_the_process_runtimes_sandbox_works_in_the_image(image: str) -> None:
    """bubblewrap, unprivileged in a user namespace, with the options the docs name."""
    probe = (
        "from services.embedded.sandbox_setup import check_bwrap;"
        "import sys; problem = check_bwrap(); print(problem or 'ok'); sys.exit(bool(problem))"
    )
    ran = _docker(
        "run", "--rm", "--network", "none", "--cap-drop", "ALL", *SANDBOX_OPTIONS,
        "--entrypoint", "python", image, "-c", probe,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr


async def test_a_job_runs_through_the_five_services_in_containers_of_the_image(
    image: str,
    containers: Callable[..., str],
    nats_url: str,
    database_url: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    """The five services, each in a container with a read-only root and its data folder
    and /tmp in memory (the manifests' readOnlyRootFilesystem with emptyDirs), blobs in
    S3, the builder and executor sharing the runtime folder and run with the sandbox's
    options: /readyz answers 200, `clinai admin-key` in the image gives a key, and a
    package uploaded to the API is built and runs a job under bubblewrap."""
    port = free_port()
    bucket = await create_bucket(s3_endpoint)
    runtime = tmp_path / "runtime"  # the volume builder and executors share
    runtime.mkdir()
    os.chown(runtime, 10001, 10001)
    env = {
        "CLINAI_NATS_URL": nats_url,
        "CLINAI_DATABASE_URL": database_url,
        "CLINAI_SIGNING_KEY": "k" * 40,
        "CLINAI_HOST": "127.0.0.1",
        "CLINAI_PORT": str(port),
        **s3_env(s3_endpoint, bucket),
    }
    common = [
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--tmpfs", "/tmp", "--tmpfs", "/var/lib/clinai:uid=10001,gid=10001,mode=0750",
        *(arg for name, value in env.items() for arg in ("--env", f"{name}={value}")),
    ]  # fmt: skip
    shared = ["--volume", f"{runtime}:/var/lib/clinai/runtime", *SANDBOX_OPTIONS]
    names = [containers(*common, image, "serve", "api")]
    for service in ("projector", "notifier"):
        names.append(containers(*common, image, "serve", service))
    for service in ("builder", "executor"):
        names.append(containers(*common, *shared, image, "serve", service))

    def running() -> None:
        for name in names:
            state = _docker("inspect", "--format", "{{.State.Running}}", name)
            if state.stdout.strip() != "true":
                raise AssertionError(f"{name} stopped:\n{_logs(names)}")

    api = f"http://127.0.0.1:{port}"
    anonymous = Client(api, None)

    async def ready() -> bool:
        running()
        try:
            return (await anonymous.get("/readyz")).status == 200
        except aiohttp.ClientConnectionError:
            return False

    await wait_until(ready, what="/readyz of the stack in containers", timeout_s=90)

    issued = _docker(
        "run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
        "--env", f"CLINAI_NATS_URL={nats_url}", image, "admin-key",
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    admin = Client(api, issued.stdout.strip())

    async def authenticated() -> bool:
        return (await admin.get("/v1/me")).status == 200

    await wait_until(authenticated, what="the admin key from the image", timeout_s=30)

    model = (await admin.post("/v1/models", json={"name": "noop"})).body
    package = zip_folder(PACKAGES / "noop")
    upload = await admin.upload(f"/v1/models/{model['id']}/versions", "package", "p.zip", package)
    assert upload.status == 201, upload.body
    version: dict[str, object] = {}

    async def built() -> bool:
        running()
        version.update((await admin.get(f"/v1/versions/{upload.body['id']}")).body)
        if version["status"] == "failed":
            log = (await admin.get(f"/v1/versions/{upload.body['id']}/log")).body
            raise AssertionError(f"the build failed: {version}\n{log}\n{_logs(names)}")
        return version["status"] == "ready"

    await wait_until(built, what="the package built in the builder's container", timeout_s=180)

    job = await admin.upload("/v1/jobs", "input", "in.txt", b"hello", version=str(version["id"]))
    assert job.status in (201, 202), job.body
    after = {"wait": "60", "after_seq": str(job.body["seq"])}  # read the job's own write
    ended = (await admin.get(f"/v1/jobs/{job.body['id']}", params=after)).body
    assert ended["status"] == "succeeded", f"{ended}\n{_logs(names)}"
    assert ended["result"]["bytes"] == 5
